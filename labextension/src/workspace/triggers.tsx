/**
 * All triggers of all pipelines: runs count, last status, the last refused
 * calls of their token routes, and the triggers whose notebook is gone (their
 * token routes answer 404), which can be deleted here.
 */
import * as React from 'react';
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Button } from '@jupyterlab/ui-components';

import { ITrigger, ITriggerRefusal } from '../api';
import { formatTime } from '../utils';
import { StatusBadge } from '../widgets/components';
import { WorkspaceModel } from './model';

/** The refusals of a trigger, if the server reports them. */
function refusals(trigger: ITrigger): ITriggerRefusal[] | null {
  const raw = (trigger as { recent_refusals?: unknown }).recent_refusals;
  return Array.isArray(raw) ? (raw as ITriggerRefusal[]) : null;
}

/** The refused calls of one trigger, folded (a native, keyboard-ready details). */
function Refusals(props: {
  trigger: ITrigger;
  trans: TranslationBundle;
}): JSX.Element {
  const { trans } = props;
  const list = refusals(props.trigger);
  if (list === null) {
    return <span className="jp-mage-Muted">—</span>;
  }
  if (list.length === 0) {
    return <span className="jp-mage-Muted">{trans.__('none')}</span>;
  }
  return (
    <details className="jp-mage-Refusals">
      <summary>
        {trans._n('%1 refused call', '%1 refused calls', list.length)}
        {' · '}
        {list[0].status}
      </summary>
      <table className="jp-mage-WsTable jp-mage-RefusalTable">
        <thead>
          <tr>
            <th scope="col">{trans.__('Time')}</th>
            <th scope="col">{trans.__('Status')}</th>
            <th scope="col">{trans.__('Reason')}</th>
          </tr>
        </thead>
        <tbody>
          {list.map((r, i) => (
            <tr key={i} className="jp-mage-Refusal" data-status={r.status}>
              <td className="jp-mage-Time">{formatTime(r.time)}</td>
              <td>{r.status}</td>
              <td>{r.reason}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </details>
  );
}

/** One trigger row. */
function TriggerRow(props: {
  model: WorkspaceModel;
  trans: TranslationBundle;
  trigger: ITrigger;
  orphan: boolean;
  highlighted: boolean;
}): JSX.Element {
  const { model, trans, trigger: t, orphan } = props;
  const ref = React.useRef<HTMLTableRowElement>(null);
  // A trigger just created from the file browser: bring it into view and
  // give it the focus, so the keyboard goes on from there.
  React.useEffect(() => {
    if (props.highlighted && ref.current) {
      ref.current.scrollIntoView({ block: 'nearest' });
      ref.current.focus();
    }
  }, [props.highlighted]);

  const remove = async (): Promise<void> => {
    const answer = await showDialog({
      title: trans.__('Delete trigger %1?', t.name),
      body: orphan
        ? trans.__(
            'Its notebook %1 is gone; its token routes answer 404. Its runs are kept.',
            `${t.pipeline_uuid}.ipynb`
          )
        : trans.__(
            'Callers of its endpoint get 404 from now on. Its runs are kept.'
          ),
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: trans.__('Delete') })
      ]
    });
    if (answer.button.accept) {
      await model.act(trans.__('Deleting the trigger'), () =>
        model.api.deleteTrigger(t.id)
      );
    }
  };

  return (
    <tr
      ref={ref}
      className={`jp-mage-WsTrigger${orphan ? ' jp-mage-mod-orphan' : ''}${
        props.highlighted ? ' jp-mod-highlighted' : ''
      }`}
      data-trigger-id={t.id}
      data-trigger-name={t.name}
      data-orphan={orphan ? 'true' : 'false'}
      tabIndex={-1}
    >
      <td>
        <span className="jp-mage-TriggerTitle">{t.name}</span>{' '}
        <span className="jp-mage-Muted">#{t.id}</span>
      </td>
      <td>
        <span className="jp-mage-BlockName">{t.pipeline_uuid}</span>
        {orphan && (
          <span
            className="jp-mage-Gone"
            title={trans.__('Its token routes answer 404')}
          >
            {trans.__('notebook gone')}
          </span>
        )}
      </td>
      <td>
        <StatusBadge status={t.status} />
      </td>
      <td className="jp-mage-TriggerRuns">{t.pipeline_runs_count ?? 0}</td>
      <td className="jp-mage-TriggerLast">
        {t.last_pipeline_run_status ? (
          <StatusBadge status={t.last_pipeline_run_status} />
        ) : (
          <span className="jp-mage-Muted">—</span>
        )}
      </td>
      <td className="jp-mage-TriggerRefusals">
        <Refusals trigger={t} trans={trans} />
      </td>
      <td className="jp-mage-WsActions">
        <Button
          className="jp-mage-TriggerShowRuns"
          small
          minimal
          title={trans.__('Show the runs of %1', t.name)}
          onClick={() => model.showTriggerRuns(t)}
        >
          {trans.__('Runs')}
        </Button>
        <Button
          className="jp-mage-DeleteTrigger"
          small
          minimal
          title={trans.__('Delete %1', t.name)}
          onClick={() => void remove()}
        >
          {trans.__('Delete')}
        </Button>
      </td>
    </tr>
  );
}

/** The Triggers tab. */
export function TriggersTab(props: {
  model: WorkspaceModel;
  trans: TranslationBundle;
}): JSX.Element {
  const { model, trans } = props;
  const triggers = model.triggers;
  if (triggers === null) {
    return <p className="jp-mage-Hint">{trans.__('Loading triggers…')}</p>;
  }
  if (triggers.length === 0) {
    return (
      <p className="jp-mage-Hint">
        {trans.__(
          'No trigger yet. Create one in the Pipelines sidebar, or with “Create API trigger…” on a notebook in the file browser.'
        )}
      </p>
    );
  }
  const orphans = triggers.filter(t => model.isTriggerOrphan(t));
  // Triggers whose notebook is gone first: they need a decision.
  const sorted = [
    ...orphans,
    ...triggers.filter(t => !model.isTriggerOrphan(t))
  ];
  return (
    <div className="jp-mage-WsTriggers">
      {orphans.length > 0 && (
        <p className="jp-mage-Hint jp-mage-OrphanHint">
          {trans._n(
            '%1 trigger belongs to a notebook that is gone: its endpoint answers 404. Delete it, or restore the notebook.',
            '%1 triggers belong to notebooks that are gone: their endpoints answer 404. Delete them, or restore the notebooks.',
            orphans.length
          )}
        </p>
      )}
      <table className="jp-mage-WsTable jp-mage-WsTriggerTable">
        <thead>
          <tr>
            <th scope="col">{trans.__('Trigger')}</th>
            <th scope="col">{trans.__('Pipeline')}</th>
            <th scope="col">{trans.__('Status')}</th>
            <th scope="col">{trans.__('Runs')}</th>
            <th scope="col">{trans.__('Last run')}</th>
            <th scope="col">{trans.__('Refused calls')}</th>
            <th scope="col">
              <span className="jp-mage-VisuallyHidden">
                {trans.__('Actions')}
              </span>
            </th>
          </tr>
        </thead>
        <tbody>
          {sorted.map(t => (
            <TriggerRow
              key={t.id}
              model={model}
              trans={trans}
              trigger={t}
              orphan={model.isTriggerOrphan(t)}
              highlighted={model.highlightedTrigger === t.id}
            />
          ))}
        </tbody>
      </table>
    </div>
  );
}
