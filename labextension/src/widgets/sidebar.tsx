/**
 * The "Pipelines" sidebar: the list of pipelines, one pipeline (blocks,
 * variables, triggers, runs) and one run.
 */
import * as React from 'react';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';

import { IBlock, IPipeline, JSONObject } from '../api';
import { MageModel } from '../model';
import { dependencyOrder, prettyJSON } from '../utils';
import { Button, JSONEditor, Section } from './components';
import { IViewContext } from './context';
import { RunsSection, RunView } from './runs';
import { TriggersSection } from './triggers';

/** The notebook path of a pipeline. */
export function pipelinePath(pipeline: {
  uuid: string;
  path?: unknown;
}): string {
  return typeof pipeline.path === 'string'
    ? pipeline.path
    : `${pipeline.uuid}.ipynb`;
}

/** Validation errors of a pipeline as strings. */
function validationErrors(pipeline: IPipeline): string[] {
  const raw = [
    ...(pipeline.errors ?? []),
    ...(pipeline.validation_errors ?? [])
  ];
  return raw.map(e => {
    if (typeof e === 'string') {
      return e;
    }
    const err = e as { message?: unknown; block_uuid?: unknown } | null;
    const message =
      typeof err?.message === 'string' ? err.message : JSON.stringify(e);
    return typeof err?.block_uuid === 'string' && err.block_uuid
      ? `${err.block_uuid}: ${message}`
      : message;
  });
}

/** The blocks of a pipeline, in dependency order. */
function BlockList(props: {
  blocks: IBlock[];
  ctx: IViewContext;
}): JSX.Element {
  const { trans } = props.ctx;
  if (props.blocks.length === 0) {
    return <p className="jp-mage-Hint">{trans.__('No block.')}</p>;
  }
  return (
    <ol className="jp-mage-BlockList">
      {dependencyOrder(props.blocks).map(b => (
        <li key={b.uuid} className="jp-mage-Block" data-block-uuid={b.uuid}>
          <span className={`jp-mage-BlockType jp-mage-BlockType-${b.type}`}>
            {b.type}
          </span>
          <span className="jp-mage-BlockName">{b.uuid}</span>
          {(b.upstream_blocks ?? []).length > 0 && (
            <span className="jp-mage-Muted">
              {' ← '}
              {b.upstream_blocks.join(', ')}
            </span>
          )}
        </li>
      ))}
    </ol>
  );
}

function Errors(props: { errors: string[] }): JSX.Element | null {
  if (props.errors.length === 0) {
    return null;
  }
  return (
    <ul className="jp-mage-Errors">
      {props.errors.map((e, i) => (
        <li key={i} className="jp-mage-Error">
          {e}
        </li>
      ))}
    </ul>
  );
}

/** The list of pipelines. */
function PipelineList(props: { ctx: IViewContext }): JSX.Element {
  const { model, trans, openPath } = props.ctx;
  const pipelines = model.pipelines;
  if (model.serverMissing) {
    return (
      <p className="jp-mage-Hint jp-mage-ServerMissing">
        {trans.__(
          'The jupyter_mage server extension is not available on this server.'
        )}
      </p>
    );
  }
  if (pipelines === null) {
    return <p className="jp-mage-Hint">{trans.__('Loading pipelines…')}</p>;
  }
  if (pipelines.length === 0) {
    return (
      <p className="jp-mage-Hint">
        {trans.__(
          'No pipeline yet. A pipeline is a notebook with cells tagged data_loader, transformer or data_exporter: use “Make cell a Mage block” in a notebook.'
        )}
      </p>
    );
  }
  return (
    <ul className="jp-mage-PipelineList">
      {pipelines.map(p => {
        const errors = validationErrors(p);
        return (
          <li
            key={p.uuid}
            className="jp-mage-PipelineItem"
            data-pipeline-uuid={p.uuid}
          >
            <div
              className="jp-mage-PipelineHeader jp-mage-Clickable"
              title={trans.__('Show triggers and runs of %1', p.uuid)}
              onClick={() => void model.selectPipeline(p.uuid)}
            >
              <span className="jp-mage-PipelineName">
                {p.name || p.uuid}
                {p.uuid.includes('/') && (
                  <span className="jp-mage-PipelineDir">
                    {p.uuid.slice(0, p.uuid.lastIndexOf('/') + 1)}
                  </span>
                )}
              </span>
              <span className="jp-mage-Muted">
                {trans._n('%1 block', '%1 blocks', p.blocks.length)}
              </span>
              <Button
                label={trans.__('Open')}
                title={trans.__('Open the notebook')}
                className="jp-mage-OpenNotebook"
                onClick={() => openPath(pipelinePath(p))}
              />
            </div>
            <BlockList blocks={p.blocks} ctx={props.ctx} />
            <Errors errors={errors} />
          </li>
        );
      })}
    </ul>
  );
}

/** The pipeline's global variables, editable as JSON. */
function VariablesSection(props: {
  ctx: IViewContext;
  pipeline: IPipeline;
}): JSX.Element {
  const { trans, saveVariables } = props.ctx;
  const saved = prettyJSON(props.pipeline.variables ?? {});
  const [text, setText] = React.useState(saved);
  const [parsed, setParsed] = React.useState<JSONObject | null>(
    props.pipeline.variables ?? {}
  );
  const [dirty, setDirty] = React.useState(false);
  const [busy, setBusy] = React.useState(false);

  // Follow the server while the user has not started editing.
  React.useEffect(() => {
    if (!dirty) {
      setText(saved);
      setParsed(props.pipeline.variables ?? {});
    }
  }, [saved]);

  return (
    <Section title={trans.__('Global variables')} className="jp-mage-Variables">
      <JSONEditor
        label={trans.__('metadata.mage.variables')}
        value={text}
        rows={Math.min(10, Math.max(3, text.split('\n').length))}
        onChange={(t, p) => {
          setText(t);
          setParsed(p);
          setDirty(true);
        }}
      />
      <div className="jp-mage-FormButtons">
        <Button
          label={trans.__('Save variables')}
          kind="accept"
          className="jp-mage-SaveVariables"
          disabled={!dirty || parsed === null || busy}
          onClick={async () => {
            if (parsed === null) {
              return;
            }
            setBusy(true);
            const ok = await saveVariables(props.pipeline.uuid, parsed);
            setBusy(false);
            if (ok) {
              setDirty(false);
            }
          }}
        />
        <Button
          label={trans.__('Revert')}
          disabled={!dirty}
          onClick={() => {
            setText(saved);
            setParsed(props.pipeline.variables ?? {});
            setDirty(false);
          }}
        />
      </div>
    </Section>
  );
}

/** One pipeline: blocks, variables, triggers, runs. */
function PipelineView(props: { ctx: IViewContext }): JSX.Element {
  const { model, trans, openPath } = props.ctx;
  const uuid = model.selectedPipeline as string;
  const pipeline = model.pipeline;
  return (
    <div className="jp-mage-PipelineView" data-pipeline-uuid={uuid}>
      <div className="jp-mage-ViewHeader">
        <Button
          label={trans.__('← Pipelines')}
          className="jp-mage-Back"
          title={trans.__('Back to the list of pipelines')}
          onClick={() => void model.selectPipeline(null)}
        />
        <h2 className="jp-mage-ViewTitle" title={uuid}>
          {pipeline?.name || uuid.slice(uuid.lastIndexOf('/') + 1)}
          {uuid.includes('/') && (
            <span className="jp-mage-PipelineDir">
              {uuid.slice(0, uuid.lastIndexOf('/') + 1)}
            </span>
          )}
        </h2>
        <Button
          label={trans.__('Open notebook')}
          className="jp-mage-OpenNotebook"
          onClick={() =>
            openPath(pipeline ? pipelinePath(pipeline) : `${uuid}.ipynb`)
          }
        />
      </div>
      {pipeline === null ? (
        <p className="jp-mage-Hint">{trans.__('Loading…')}</p>
      ) : (
        <>
          <Section title={trans.__('Blocks')} className="jp-mage-Blocks">
            <BlockList blocks={pipeline.blocks} ctx={props.ctx} />
            <Errors errors={validationErrors(pipeline)} />
          </Section>
          <VariablesSection
            key={pipeline.uuid}
            ctx={props.ctx}
            pipeline={pipeline}
          />
          <TriggersSection ctx={props.ctx} />
          <RunsSection ctx={props.ctx} />
        </>
      )}
    </div>
  );
}

/** The whole sidebar content. */
function MageView(props: { ctx: IViewContext }): JSX.Element {
  const { model, trans } = props.ctx;
  let body: JSX.Element;
  if (model.selectedRun !== null) {
    body = <RunView ctx={props.ctx} />;
  } else if (model.selectedPipeline !== null) {
    body = <PipelineView key={model.selectedPipeline} ctx={props.ctx} />;
  } else {
    body = <PipelineList ctx={props.ctx} />;
  }
  return (
    <div className="jp-mage-SidebarContent">
      <header className="jp-mage-SidebarHeader">
        <h1>{trans.__('Pipelines')}</h1>
        <div className="jp-mage-SidebarActions">
          {props.ctx.openWorkspace && (
            <Button
              label={trans.__('Workspace')}
              title={trans.__(
                'Open the Pipelines workspace: runs of all pipelines, DAGs, triggers'
              )}
              className="jp-mage-OpenWorkspace"
              onClick={props.ctx.openWorkspace}
            />
          )}
          <Button
            label={trans.__('Refresh')}
            className="jp-mage-Refresh"
            onClick={() => void model.refresh(true)}
          />
        </div>
      </header>
      {body}
    </div>
  );
}

/**
 * The sidebar widget. It tells the model when it is shown or hidden, so the
 * run list is polled only while a user can see it.
 */
export class MageSidebar extends ReactWidget {
  /**
   * @param ctx the services the views need
   */
  constructor(private readonly _ctx: IViewContext) {
    super();
    this.addClass('jp-mage-Sidebar');
  }

  /** The model shown. */
  get model(): MageModel {
    return this._ctx.model;
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._ctx.model.setVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._ctx.model.setVisible(false);
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this._ctx.model.setVisible(this.isVisible);
  }

  protected render(): JSX.Element {
    return (
      <UseSignal signal={this._ctx.model.changed}>
        {() => <MageView ctx={this._ctx} />}
      </UseSignal>
    );
  }
}
