/**
 * Runs of a pipeline: the live list, and one run's detail with its block runs.
 */
import * as React from 'react';

import {
  FINAL_BLOCK_STATUSES,
  IBlockLog,
  IBlockRun,
  IPipelineRun
} from '../api';
import { reportError } from '../model';
import { errorText, formatDuration, formatTime, stripAnsi } from '../utils';
import { Button, confirmCancelRun, Section, StatusBadge } from './components';
import { IViewContext } from './context';

const ACTIVE_STATUSES: readonly string[] = ['initial', 'queued', 'running'];

/** The runs section of a pipeline, newest first, refreshed by the model's poll. */
export function RunsSection(props: { ctx: IViewContext }): JSX.Element {
  const { trans, model } = props.ctx;
  const runs = model.runs;
  return (
    <Section
      title={trans.__('Runs')}
      className="jp-mage-Runs"
      actions={
        <span className="jp-mage-Muted">
          {model.runsCount > runs.length
            ? trans.__('%1 of %2', runs.length, model.runsCount)
            : ''}
        </span>
      }
    >
      {runs.length === 0 ? (
        <p className="jp-mage-Hint">{trans.__('No run yet.')}</p>
      ) : (
        <table className="jp-mage-RunTable">
          <thead>
            <tr>
              <th>{trans.__('Run')}</th>
              <th>{trans.__('Status')}</th>
              <th>{trans.__('Started')}</th>
              <th>{trans.__('Duration')}</th>
            </tr>
          </thead>
          <tbody>
            {runs.map(run => (
              <RunRow key={run.id} ctx={props.ctx} run={run} />
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}

function RunRow(props: { ctx: IViewContext; run: IPipelineRun }): JSX.Element {
  const { model, trans } = props.ctx;
  const { run } = props;
  return (
    <tr
      className="jp-mage-RunRow jp-mage-Clickable"
      data-run-id={run.id}
      data-status={run.status}
      title={trans.__('Show run %1', run.id)}
      onClick={() => void model.selectRun(run.id)}
    >
      <td>#{run.id}</td>
      <td>
        <StatusBadge status={run.status} />
      </td>
      <td className="jp-mage-Time">
        {formatTime(run.started_at ?? run.created_at)}
      </td>
      <td className="jp-mage-Time">
        {formatDuration(run.started_at, run.completed_at)}
      </td>
    </tr>
  );
}

/** One run: its actions and block runs. */
export function RunView(props: { ctx: IViewContext }): JSX.Element {
  const { model, trans, openPath } = props.ctx;
  const run = model.run;
  const runId = model.selectedRun;
  const back = (
    <Button
      label={trans.__('← Runs')}
      className="jp-mage-Back"
      title={trans.__('Back to the pipeline')}
      onClick={() => void model.selectRun(null)}
    />
  );
  if (run === null || run.id !== runId) {
    return (
      <div className="jp-mage-RunView">
        {back}
        <p className="jp-mage-Hint">
          {trans.__('Loading run %1…', runId ?? '')}
        </p>
      </div>
    );
  }
  const active = ACTIVE_STATUSES.includes(run.status);
  const retryable = run.status === 'failed' || run.status === 'cancelled';

  const cancel = (): Promise<void> =>
    confirmCancelRun(trans, run.id, async () => {
      await model.act(trans.__('Cancelling the run'), () =>
        model.api.cancelRun(run.id)
      );
    });

  return (
    <div
      className="jp-mage-RunView"
      data-run-id={run.id}
      data-status={run.status}
    >
      <div className="jp-mage-ViewHeader">
        {back}
        <h2 className="jp-mage-ViewTitle">
          {trans.__('Run #%1', run.id)} <StatusBadge status={run.status} />
        </h2>
      </div>
      <dl className="jp-mage-Facts">
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
      <div className="jp-mage-Toolbar">
        {active && (
          <Button
            label={trans.__('Cancel run')}
            kind="reject"
            className="jp-mage-CancelRun"
            onClick={() => void cancel()}
          />
        )}
        {retryable && (
          <Button
            label={trans.__('Retry failed blocks')}
            className="jp-mage-RetryRun"
            onClick={() =>
              void model.act(trans.__('Retrying the run'), () =>
                model.api.retryRun(run.id)
              )
            }
          />
        )}
        {run.executed_notebook && (
          <Button
            label={trans.__('Open executed notebook')}
            className="jp-mage-OpenExecuted"
            onClick={() => openPath(run.executed_notebook as string)}
          />
        )}
      </div>
      <Section title={trans.__('Blocks')} className="jp-mage-BlockRuns">
        {(run.block_runs ?? []).length === 0 ? (
          <p className="jp-mage-Hint">{trans.__('No block run yet.')}</p>
        ) : (
          <ul className="jp-mage-BlockRunList">
            {(run.block_runs ?? []).map(br => (
              <BlockRunItem key={br.id} ctx={props.ctx} blockRun={br} />
            ))}
          </ul>
        )}
      </Section>
    </div>
  );
}

/** One block run; expands to its output summary, log and traceback. */
function BlockRunItem(props: {
  ctx: IViewContext;
  blockRun: IBlockRun;
}): JSX.Element {
  const { model, trans } = props.ctx;
  const br = props.blockRun;
  const failed = br.status === 'failed';
  const [expanded, setExpanded] = React.useState(failed);
  const [log, setLog] = React.useState<IBlockLog | null>(null);
  const [outputs, setOutputs] = React.useState<unknown[] | null>(null);

  // Failed blocks open by themselves, so the traceback is one glance away.
  React.useEffect(() => {
    if (failed) {
      setExpanded(true);
    }
  }, [failed]);

  // (Re)load the detail when opened and whenever the block's status changes.
  React.useEffect(() => {
    if (!expanded) {
      return;
    }
    let live = true;
    model.api
      .blockLog(br.id)
      .then(l => live && setLog(l))
      .catch(
        err =>
          live && reportError(trans, trans.__('Loading the block log'), err)
      );
    if (FINAL_BLOCK_STATUSES.includes(br.status)) {
      model.api
        .blockOutputs(br.id)
        .then(o => live && setOutputs(o))
        .catch(
          err =>
            live &&
            reportError(trans, trans.__('Loading the block outputs'), err)
        );
    }
    return () => {
      live = false;
    };
  }, [expanded, br.id, br.status]);

  const traceback = stripAnsi(
    errorText(br.metrics?.error) || errorText(log?.error)
  );
  const summaries = outputs ?? br.outputs ?? [];

  return (
    <li
      className={`jp-mage-BlockRun ${expanded ? 'jp-mod-expanded' : ''}`}
      data-block-uuid={br.block_uuid}
      data-status={br.status}
    >
      <div
        className="jp-mage-BlockRunHeader jp-mage-Clickable"
        onClick={() => setExpanded(!expanded)}
      >
        <span className="jp-mage-Caret">{expanded ? '▾' : '▸'}</span>
        <span className="jp-mage-BlockName">{br.block_uuid}</span>
        <StatusBadge status={br.status} />
        <span className="jp-mage-Muted jp-mage-Time">
          {formatDuration(br.started_at, br.completed_at)}
        </span>
      </div>
      {expanded && (
        <div className="jp-mage-BlockRunBody">
          {traceback && (
            <div className="jp-mage-Detail">
              <span className="jp-mage-FieldLabel">{trans.__('Error')}</span>
              <pre className="jp-mage-Code jp-mage-Traceback">{traceback}</pre>
            </div>
          )}
          <div className="jp-mage-Detail">
            <span className="jp-mage-FieldLabel">{trans.__('Output')}</span>
            {summaries.length === 0 ? (
              <span className="jp-mage-Muted"> {trans.__('none')}</span>
            ) : (
              <pre className="jp-mage-Code jp-mage-Outputs">
                {summaries.map(s => summaryText(s)).join('\n')}
              </pre>
            )}
          </div>
          <div className="jp-mage-Detail">
            <span className="jp-mage-FieldLabel">{trans.__('Log')}</span>
            {log?.content ? (
              <pre className="jp-mage-Code jp-mage-Log">
                {stripAnsi(log.content)}
              </pre>
            ) : (
              <span className="jp-mage-Muted"> {trans.__('empty')}</span>
            )}
          </div>
        </div>
      )}
    </li>
  );
}

/** One output summary as short text. */
function summaryText(summary: unknown): string {
  if (summary === null || typeof summary !== 'object') {
    return String(summary);
  }
  const s = summary as Record<string, unknown>;
  const head = [
    s['type'],
    s['shape'] ? `shape ${JSON.stringify(s['shape'])}` : ''
  ]
    .concat(s['length'] !== undefined ? [`len ${String(s['length'])}`] : [])
    .filter(Boolean)
    .join(', ');
  const body = s['repr'] ?? s['text_data'] ?? s['sample'] ?? s['sample_data'];
  const text =
    typeof body === 'string' ? body : body ? JSON.stringify(body) : '';
  return head ? `${head}${text ? `: ${text}` : ''}` : text || JSON.stringify(s);
}
