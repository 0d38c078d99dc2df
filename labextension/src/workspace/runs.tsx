/**
 * The runs of all pipelines: filters (status, pipeline, trigger), a table whose
 * rows open the run (click, or focus and Enter), and paging.
 *
 * A plain table rather than ui-components' `Table`: that one sorts the rows it
 * is given on the client and its rows cannot take the focus, while these rows
 * are one page of a server-side list and must open from the keyboard.
 */
import * as React from 'react';
import { TranslationBundle } from '@jupyterlab/translation';
import { Button, HTMLSelect } from '@jupyterlab/ui-components';

import { IPipelineRun, IRunFilters, RUN_STATUSES, RunStatus } from '../api';
import { formatDuration, formatTime } from '../utils';
import { StatusBadge } from '../widgets/components';
import { PAGE_SIZES, WorkspaceModel } from './model';

/** The filter bar. */
function RunFilters(props: {
  model: WorkspaceModel;
  trans: TranslationBundle;
}): JSX.Element {
  const { model, trans } = props;
  const f = model.filters;
  const pipelines = new Set((model.pipelines ?? []).map(p => p.uuid));
  // Pipelines of triggers whose notebook is gone still have runs to find.
  for (const t of model.triggers ?? []) {
    pipelines.add(t.pipeline_uuid);
  }
  if (f.pipeline_uuid) {
    pipelines.add(f.pipeline_uuid);
  }
  const triggers = (model.triggers ?? [])
    .filter(t => !f.pipeline_uuid || t.pipeline_uuid === f.pipeline_uuid)
    .sort((a, b) => a.name.localeCompare(b.name) || a.id - b.id);
  const set = (change: Partial<IRunFilters>): void => {
    const next: IRunFilters = { ...f, ...change };
    for (const key of Object.keys(next) as (keyof IRunFilters)[]) {
      if (next[key] === undefined || next[key] === '') {
        delete next[key];
      }
    }
    model.setFilters(next);
  };
  return (
    <div className="jp-mage-WsFilters" role="search">
      <label className="jp-mage-WsFilter">
        <span className="jp-mage-FieldLabel">{trans.__('Status')}</span>
        <HTMLSelect
          className="jp-mage-FilterStatus"
          aria-label={trans.__('Filter by status')}
          value={f.status ?? ''}
          onChange={e =>
            set({ status: (e.target.value || undefined) as RunStatus })
          }
          options={[
            { label: trans.__('All statuses'), value: '' },
            ...RUN_STATUSES.map(s => ({ label: s, value: s }))
          ]}
        />
      </label>
      <label className="jp-mage-WsFilter">
        <span className="jp-mage-FieldLabel">{trans.__('Pipeline')}</span>
        <HTMLSelect
          className="jp-mage-FilterPipeline"
          aria-label={trans.__('Filter by pipeline')}
          value={f.pipeline_uuid ?? ''}
          onChange={e => {
            const uuid = e.target.value || undefined;
            const trigger = (model.triggers ?? []).find(
              t => t.id === f.pipeline_schedule_id
            );
            // A trigger of another pipeline cannot match any more: drop it.
            set({
              pipeline_uuid: uuid,
              pipeline_schedule_id:
                uuid && trigger && trigger.pipeline_uuid !== uuid
                  ? undefined
                  : f.pipeline_schedule_id
            });
          }}
          options={[
            { label: trans.__('All pipelines'), value: '' },
            ...[...pipelines].sort().map(u => ({ label: u, value: u }))
          ]}
        />
      </label>
      <label className="jp-mage-WsFilter">
        <span className="jp-mage-FieldLabel">{trans.__('Trigger')}</span>
        <HTMLSelect
          className="jp-mage-FilterTrigger"
          aria-label={trans.__('Filter by trigger')}
          value={
            f.pipeline_schedule_id === undefined
              ? ''
              : String(f.pipeline_schedule_id)
          }
          onChange={e =>
            set({
              pipeline_schedule_id: e.target.value
                ? Number(e.target.value)
                : undefined
            })
          }
          options={[
            { label: trans.__('All triggers'), value: '' },
            ...triggers.map(t => ({
              label: f.pipeline_uuid
                ? `${t.name} (#${t.id})`
                : `${t.name} (#${t.id}, ${t.pipeline_uuid})`,
              value: String(t.id)
            }))
          ]}
        />
      </label>
      <Button
        className="jp-mage-ClearFilters"
        small
        minimal
        disabled={Object.keys(f).length === 0}
        onClick={() => model.setFilters({})}
      >
        {trans.__('Clear filters')}
      </Button>
    </div>
  );
}

/** One row; opens the run on click or Enter. */
function RunRow(props: {
  model: WorkspaceModel;
  trans: TranslationBundle;
  run: IPipelineRun;
  triggerName: string;
}): JSX.Element {
  const { model, trans, run } = props;
  const open = (): void => void model.openRun(run.id);
  return (
    <tr
      className="jp-mage-WsRunRow"
      data-run-id={run.id}
      data-status={run.status}
      data-pipeline-uuid={run.pipeline_uuid}
      tabIndex={0}
      title={trans.__('Show run %1', run.id)}
      aria-label={trans.__(
        'Run %1 of %2: %3',
        run.id,
        run.pipeline_uuid,
        run.status
      )}
      onClick={open}
      onKeyDown={e => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          open();
        }
      }}
    >
      <td>#{run.id}</td>
      <td className="jp-mage-BlockName">{run.pipeline_uuid}</td>
      <td>{props.triggerName}</td>
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

/** The Runs tab. */
export function RunsTab(props: {
  model: WorkspaceModel;
  trans: TranslationBundle;
}): JSX.Element {
  const { model, trans } = props;
  const runs = model.runs;
  const names = new Map((model.triggers ?? []).map(t => [t.id, t.name]));
  const first = model.offset + 1;
  const last = model.offset + (runs?.length ?? 0);
  return (
    <div className="jp-mage-WsRuns">
      <RunFilters model={model} trans={trans} />
      {runs === null ? (
        <p className="jp-mage-Hint">{trans.__('Loading runs…')}</p>
      ) : runs.length === 0 ? (
        <p className="jp-mage-Hint jp-mage-NoRuns">
          {Object.keys(model.filters).length > 0
            ? trans.__('No run matches these filters.')
            : trans.__('No run yet.')}
        </p>
      ) : (
        <table className="jp-mage-WsTable jp-mage-WsRunTable">
          <thead>
            <tr>
              <th scope="col">{trans.__('Run')}</th>
              <th scope="col">{trans.__('Pipeline')}</th>
              <th scope="col">{trans.__('Trigger')}</th>
              <th scope="col">{trans.__('Status')}</th>
              <th scope="col">{trans.__('Started')}</th>
              <th scope="col">{trans.__('Duration')}</th>
            </tr>
          </thead>
          <tbody>
            {runs.map(run => (
              <RunRow
                key={run.id}
                model={model}
                trans={trans}
                run={run}
                triggerName={
                  run.pipeline_schedule_id === null
                    ? '—'
                    : (run.pipeline_schedule_name ??
                      names.get(run.pipeline_schedule_id) ??
                      `#${run.pipeline_schedule_id}`)
                }
              />
            ))}
          </tbody>
        </table>
      )}
      <div className="jp-mage-WsPager">
        <span className="jp-mage-WsPageInfo" aria-live="polite">
          {runs && runs.length > 0
            ? trans.__('%1–%2 of %3', first, last, model.runsCount)
            : ''}
        </span>
        <Button
          className="jp-mage-PrevPage"
          small
          disabled={model.offset === 0}
          onClick={() => model.page(-1)}
        >
          {trans.__('‹ Newer')}
        </Button>
        <Button
          className="jp-mage-NextPage"
          small
          disabled={!model.hasNext}
          onClick={() => model.page(1)}
        >
          {trans.__('Older ›')}
        </Button>
        <label className="jp-mage-WsFilter">
          <span className="jp-mage-FieldLabel">{trans.__('Per page')}</span>
          <HTMLSelect
            className="jp-mage-PageSize"
            aria-label={trans.__('Runs per page')}
            value={String(model.pageSize)}
            onChange={e => model.setPageSize(Number(e.target.value))}
            options={PAGE_SIZES.map(n => ({
              label: String(n),
              value: String(n)
            }))}
          />
        </label>
      </div>
    </div>
  );
}
