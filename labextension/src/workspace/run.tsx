/**
 * One run in the workspace: its facts and actions, the picture of its
 * pipeline's DAG coloured by live block statuses, and the selected block's
 * error, output and log (the log polled while the block runs).
 */
import * as React from 'react';
import { TranslationBundle } from '@jupyterlab/translation';
import { Button } from '@jupyterlab/ui-components';

import {
  FINAL_BLOCK_STATUSES,
  IBlockLog,
  IBlockRun,
  IPipelineRun
} from '../api';
import { reportError } from '../model';
import { errorText, formatDuration, formatTime, stripAnsi } from '../utils';
import { confirmCancelRun, StatusBadge } from '../widgets/components';
import { DagView, IDagBlock } from './dag';
import { WorkspaceModel } from './model';
import { OutputSummary } from './outputs';

/** How often a running block's log is fetched (ms). */
const LOG_POLL_INTERVAL = 1000;

const ACTIVE_STATUSES: readonly string[] = ['initial', 'queued', 'running'];

/** What the run view needs from the application. */
export interface IRunViewProps {
  model: WorkspaceModel;
  trans: TranslationBundle;
  openPath: (path: string) => void;
}

/** The blocks of the picture: the pipeline's, with their block runs' status. */
function dagBlocks(model: WorkspaceModel, run: IPipelineRun): IDagBlock[] {
  const runs = new Map((run.block_runs ?? []).map(b => [b.block_uuid, b]));
  const blocks: IDagBlock[] = (model.runPipeline?.blocks ?? [])
    .filter(b => b.type !== 'scratchpad')
    .map(b => ({
      uuid: b.uuid,
      type: b.type,
      upstream_blocks: b.upstream_blocks ?? [],
      status: runs.get(b.uuid)?.status ?? 'pending'
    }));
  // Blocks that ran but are no longer in the notebook (or a notebook gone):
  // shown without edges, so no block run is hidden.
  for (const br of run.block_runs ?? []) {
    if (!blocks.some(b => b.uuid === br.block_uuid)) {
      blocks.push({
        uuid: br.block_uuid,
        type: typeof br.block_type === 'string' ? br.block_type : 'block',
        upstream_blocks: [],
        status: br.status
      });
    }
  }
  return blocks;
}

/** The open run. */
export function WorkspaceRunView(props: IRunViewProps): JSX.Element {
  const { model, trans, openPath } = props;
  const run = model.run;
  const back = (
    <Button
      className="jp-mage-Back"
      minimal
      onClick={() => model.closeRun()}
      title={trans.__('Back to the runs')}
    >
      {trans.__('← Runs')}
    </Button>
  );
  if (run === null) {
    return (
      <div className="jp-mage-WsRun">
        {back}
        <p className="jp-mage-Hint">
          {trans.__('Loading run %1…', model.selectedRun ?? '')}
        </p>
      </div>
    );
  }
  const active = ACTIVE_STATUSES.includes(run.status);
  const retryable = run.status === 'failed' || run.status === 'cancelled';
  const blocks = dagBlocks(model, run);
  const selected = model.selectedBlock;
  const blockRun = (run.block_runs ?? []).find(b => b.block_uuid === selected);

  const cancel = (): Promise<void> =>
    confirmCancelRun(trans, run.id, async () => {
      await model.act(trans.__('Cancelling the run'), () =>
        model.api.cancelRun(run.id)
      );
    });

  return (
    <div
      className="jp-mage-WsRun"
      data-run-id={run.id}
      data-status={run.status}
    >
      <div className="jp-mage-WsRunHeader">
        {back}
        <h2 className="jp-mage-ViewTitle">
          {trans.__('Run #%1', run.id)} <StatusBadge status={run.status} />
        </h2>
        {active && (
          <Button
            className="jp-mage-CancelRun"
            small
            onClick={() => void cancel()}
          >
            {trans.__('Cancel run')}
          </Button>
        )}
        {retryable && (
          <Button
            className="jp-mage-RetryRun"
            small
            onClick={() =>
              void model.act(trans.__('Retrying the run'), () =>
                model.api.retryRun(run.id)
              )
            }
          >
            {trans.__('Retry failed blocks')}
          </Button>
        )}
        {run.executed_notebook && (
          <Button
            className="jp-mage-OpenExecuted"
            small
            onClick={() => openPath(run.executed_notebook as string)}
          >
            {trans.__('Open executed notebook')}
          </Button>
        )}
      </div>
      <dl className="jp-mage-Facts jp-mage-WsFacts">
        <dt>{trans.__('Pipeline')}</dt>
        <dd>{run.pipeline_uuid}</dd>
        <dt>{trans.__('Trigger')}</dt>
        <dd>
          {run.pipeline_schedule_name ?? ''} #{run.pipeline_schedule_id ?? '—'}
        </dd>
        <dt>{trans.__('Started')}</dt>
        <dd>{formatTime(run.started_at ?? run.created_at)}</dd>
        <dt>{trans.__('Duration')}</dt>
        <dd>{formatDuration(run.started_at, run.completed_at)}</dd>
        <dt>{trans.__('Variables')}</dt>
        <dd>
          <code>{JSON.stringify(run.variables ?? {})}</code>
        </dd>
      </dl>
      {errorText(run.metrics?.error) && (
        <pre className="jp-mage-Code jp-mage-Traceback jp-mage-RunError">
          {stripAnsi(errorText(run.metrics?.error))}
        </pre>
      )}
      {model.runPipelineGone && (
        <p className="jp-mage-Hint">
          {trans.__(
            'The notebook of this pipeline is gone: the picture shows the block runs only, without their edges.'
          )}
        </p>
      )}
      {blocks.length === 0 ? (
        <p className="jp-mage-Hint">{trans.__('No block yet.')}</p>
      ) : (
        <DagView
          blocks={blocks}
          selected={selected}
          onSelect={uuid => model.selectBlock(selected === uuid ? null : uuid)}
          trans={trans}
        />
      )}
      {selected === null ? (
        <p className="jp-mage-Hint">
          {trans.__(
            'Select a block (click it, or Tab to it and press Enter) to see its log, output and error.'
          )}
        </p>
      ) : (
        <BlockDetail
          key={`${run.id}/${selected}`}
          model={model}
          trans={trans}
          uuid={selected}
          blockRun={blockRun}
        />
      )}
    </div>
  );
}

/** The selected block: error, outputs and log. */
function BlockDetail(props: {
  model: WorkspaceModel;
  trans: TranslationBundle;
  uuid: string;
  blockRun: IBlockRun | undefined;
}): JSX.Element {
  const { model, trans, blockRun } = props;
  const [log, setLog] = React.useState<IBlockLog | null>(null);
  const [outputs, setOutputs] = React.useState<unknown[] | null>(null);
  const id = blockRun?.id;
  const status = blockRun?.status;
  const finished =
    status !== undefined && FINAL_BLOCK_STATUSES.includes(status);

  // Fetch the log now and, while the block runs, every second; once the block
  // is finished, fetch its log and outputs one last time.
  React.useEffect(() => {
    if (id === undefined) {
      return;
    }
    let live = true;
    let timer: number | undefined;
    const loadLog = async (): Promise<void> => {
      try {
        const l = await model.api.blockLog(id);
        if (live) {
          setLog(l);
        }
      } catch (err) {
        if (live) {
          reportError(trans, trans.__('Loading the block log'), err);
        }
        return;
      }
      if (live && !finished) {
        timer = window.setTimeout(() => void loadLog(), LOG_POLL_INTERVAL);
      }
    };
    void loadLog();
    if (finished) {
      model.api
        .blockOutputs(id)
        .then(o => live && setOutputs(o))
        .catch(
          err =>
            live &&
            reportError(trans, trans.__('Loading the block outputs'), err)
        );
    }
    return () => {
      live = false;
      window.clearTimeout(timer);
    };
  }, [id, finished]);

  const traceback = stripAnsi(
    errorText(blockRun?.metrics?.error) || errorText(log?.error)
  );
  const summaries = outputs ?? blockRun?.outputs ?? [];
  return (
    <section
      className="jp-mage-WsBlock"
      data-block-uuid={props.uuid}
      data-status={status ?? 'pending'}
      aria-label={trans.__('Block %1', props.uuid)}
    >
      <header className="jp-mage-SectionHeader">
        <h3>
          <span className="jp-mage-BlockName">{props.uuid}</span>{' '}
          <StatusBadge status={status ?? 'pending'} />
        </h3>
        <span className="jp-mage-Muted jp-mage-Time">
          {blockRun
            ? formatDuration(blockRun.started_at, blockRun.completed_at)
            : ''}
        </span>
      </header>
      {blockRun === undefined ? (
        <p className="jp-mage-Hint">
          {trans.__('The run has not reached this block.')}
        </p>
      ) : (
        <>
          {traceback && (
            <div className="jp-mage-Detail jp-mage-WsError">
              <h4 className="jp-mage-FieldLabel">{trans.__('Error')}</h4>
              <pre className="jp-mage-Code jp-mage-Traceback">{traceback}</pre>
            </div>
          )}
          <div className="jp-mage-Detail jp-mage-WsOutputs">
            <h4 className="jp-mage-FieldLabel">{trans.__('Output')}</h4>
            {!finished ? (
              <span className="jp-mage-Muted">
                {trans.__('when the block is finished')}
              </span>
            ) : summaries.length === 0 ? (
              <span className="jp-mage-Muted">{trans.__('none')}</span>
            ) : (
              summaries.map((s, i) => (
                <OutputSummary key={i} summary={s} trans={trans} />
              ))
            )}
          </div>
          <div className="jp-mage-Detail jp-mage-WsLog">
            <h4 className="jp-mage-FieldLabel">
              {trans.__('Log')}
              {!finished && (
                <span className="jp-mage-Muted"> {trans.__('(live)')}</span>
              )}
            </h4>
            {log?.content ? (
              <pre className="jp-mage-Code jp-mage-Log" aria-live="polite">
                {stripAnsi(log.content)}
              </pre>
            ) : (
              <span className="jp-mage-Muted">{trans.__('empty')}</span>
            )}
          </div>
        </>
      )}
    </section>
  );
}
