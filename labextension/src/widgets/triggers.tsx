/**
 * The triggers of a pipeline: create, edit, enable/disable, rotate, delete,
 * run now, and the endpoint with ready-to-copy curl commands.
 */
import * as React from 'react';
import { Dialog, showDialog } from '@jupyterlab/apputils';

import { ITrigger, ITriggerInput, JSONObject } from '../api';
import {
  curlWithBearer,
  curlWithPathToken,
  prettyJSON,
  triggerEndpoints
} from '../utils';
import {
  Button,
  CopyBlock,
  JSONEditor,
  Section,
  StatusBadge,
  TextField
} from './components';
import { IViewContext } from './context';

/** The form of a trigger (create or edit). */
function TriggerForm(props: {
  ctx: IViewContext;
  initial?: ITrigger;
  onSubmit: (input: ITriggerInput) => Promise<boolean>;
  onCancel: () => void;
}): JSX.Element {
  const { trans } = props.ctx;
  const init = props.initial;
  const [name, setName] = React.useState(init?.name ?? '');
  const [description, setDescription] = React.useState(init?.description ?? '');
  const [active, setActive] = React.useState(
    init ? init.status === 'active' : true
  );
  const [varsText, setVarsText] = React.useState(
    prettyJSON(init?.variables ?? {})
  );
  const [vars, setVars] = React.useState<JSONObject | null>(
    init?.variables ?? {}
  );
  const [busy, setBusy] = React.useState(false);
  const valid = name.trim() !== '' && vars !== null;

  const submit = async (): Promise<void> => {
    if (!valid || vars === null) {
      return;
    }
    setBusy(true);
    const ok = await props.onSubmit({
      name: name.trim(),
      description,
      status: active ? 'active' : 'inactive',
      variables: vars
    });
    setBusy(false);
    if (ok) {
      props.onCancel();
    }
  };

  return (
    <form
      className="jp-mage-TriggerForm"
      onSubmit={e => {
        e.preventDefault();
        void submit();
      }}
    >
      <TextField
        label={trans.__('Name')}
        value={name}
        onChange={setName}
        className="jp-mage-TriggerName"
        placeholder={trans.__('e.g. nightly_webhook')}
      />
      <TextField
        label={trans.__('Description')}
        value={description}
        onChange={setDescription}
        className="jp-mage-TriggerDescription"
      />
      <JSONEditor
        label={trans.__('Variables (JSON object)')}
        value={varsText}
        className="jp-mage-TriggerVariables"
        onChange={(text, parsed) => {
          setVarsText(text);
          setVars(parsed);
        }}
      />
      <label className="jp-mage-Checkbox">
        <input
          type="checkbox"
          checked={active}
          onChange={e => setActive(e.target.checked)}
        />
        {trans.__('Active')}
      </label>
      <div className="jp-mage-FormButtons">
        <button
          type="submit"
          className="jp-mage-Button jp-mage-Button-accept"
          disabled={!valid || busy}
        >
          {init ? trans.__('Save') : trans.__('Create')}
        </button>
        <Button label={trans.__('Cancel')} onClick={props.onCancel} />
      </div>
    </form>
  );
}

/** The "Run now" form: variables pre-filled from the trigger. */
function RunNowForm(props: {
  ctx: IViewContext;
  trigger: ITrigger;
  onDone: () => void;
}): JSX.Element {
  const { trans, model } = props.ctx;
  const [text, setText] = React.useState(
    prettyJSON(props.trigger.variables ?? {})
  );
  const [vars, setVars] = React.useState<JSONObject | null>(
    props.trigger.variables ?? {}
  );
  return (
    <div className="jp-mage-RunNowForm">
      <JSONEditor
        label={trans.__('Run variables (JSON object)')}
        value={text}
        onChange={(t, parsed) => {
          setText(t);
          setVars(parsed);
        }}
      />
      <div className="jp-mage-FormButtons">
        <Button
          label={trans.__('Start run')}
          kind="accept"
          className="jp-mage-StartRun"
          disabled={vars === null}
          onClick={async () => {
            if (vars === null) {
              return;
            }
            const run = await model.act(trans.__('Starting the run'), () =>
              model.api.runNow(props.trigger.id, vars)
            );
            if (run) {
              props.onDone();
            }
          }}
        />
        <Button label={trans.__('Cancel')} onClick={props.onDone} />
      </div>
    </div>
  );
}

/** The endpoint and curl commands of an API trigger. */
function TriggerEndpoint(props: {
  ctx: IViewContext;
  trigger: ITrigger;
}): JSX.Element {
  const { trans, model } = props.ctx;
  const { trigger } = props;
  if (!trigger.token) {
    return (
      <p className="jp-mage-Hint">
        {trans.__('The server did not send this trigger’s token.')}
      </p>
    );
  }
  const endpoints = triggerEndpoints(
    model.api.url(''),
    trigger.id,
    trigger.token
  );
  return (
    <div className="jp-mage-Endpoint">
      <CopyBlock
        label={trans.__('Endpoint URL')}
        text={endpoints.pathUrl}
        trans={trans}
        className="jp-mage-EndpointUrl"
      />
      <CopyBlock
        label={trans.__('curl (token in the URL)')}
        text={curlWithPathToken(endpoints, trigger.variables)}
        trans={trans}
        className="jp-mage-CurlPath"
      />
      <CopyBlock
        label={trans.__('curl (Bearer token)')}
        text={curlWithBearer(endpoints, trigger.token, trigger.variables)}
        trans={trans}
        className="jp-mage-CurlBearer"
      />
    </div>
  );
}

/** One trigger, collapsible. */
function TriggerItem(props: {
  ctx: IViewContext;
  trigger: ITrigger;
  expanded: boolean;
  onToggle: () => void;
}): JSX.Element {
  const { trans, model } = props.ctx;
  const { trigger } = props;
  const [mode, setMode] = React.useState<'view' | 'edit' | 'run'>('view');
  const active = trigger.status === 'active';

  const remove = async (): Promise<void> => {
    const answer = await showDialog({
      title: trans.__('Delete trigger “%1”?', trigger.name),
      body: trans.__(
        'Callers of its endpoint will get 404. Its runs are kept.'
      ),
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: trans.__('Delete') })
      ]
    });
    if (answer.button.accept) {
      await model.act(trans.__('Deleting the trigger'), () =>
        model.api.deleteTrigger(trigger.id)
      );
    }
  };

  const rotate = async (): Promise<void> => {
    const answer = await showDialog({
      title: trans.__('Rotate the token of “%1”?', trigger.name),
      body: trans.__(
        'A new token is issued; callers using the old one get 403.'
      ),
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: trans.__('Rotate') })
      ]
    });
    if (answer.button.accept) {
      await model.act(trans.__('Rotating the token'), () =>
        model.api.rotateToken(trigger.id)
      );
    }
  };

  return (
    <li
      className={`jp-mage-Trigger ${props.expanded ? 'jp-mod-expanded' : ''}`}
      data-trigger-id={trigger.id}
      data-trigger-name={trigger.name}
    >
      <div
        className="jp-mage-TriggerHeader jp-mage-Clickable"
        onClick={props.onToggle}
        title={trans.__('Show or hide the trigger')}
      >
        <span className="jp-mage-Caret">{props.expanded ? '▾' : '▸'}</span>
        <span className="jp-mage-TriggerTitle">{trigger.name}</span>
        <span className="jp-mage-Muted">
          {trigger.schedule_type} · #{trigger.id}
        </span>
        <StatusBadge status={trigger.status} />
      </div>
      {props.expanded && (
        <div className="jp-mage-TriggerBody">
          {trigger.description && (
            <p className="jp-mage-Description">{trigger.description}</p>
          )}
          {mode === 'edit' ? (
            <TriggerForm
              ctx={props.ctx}
              initial={trigger}
              onCancel={() => setMode('view')}
              onSubmit={async input =>
                (await model.act(trans.__('Saving the trigger'), () =>
                  model.api.updateTrigger(trigger.id, input)
                )) !== undefined
              }
            />
          ) : (
            <div className="jp-mage-Toolbar">
              <Button
                label={trans.__('Run now')}
                kind="accept"
                className="jp-mage-RunNow"
                onClick={() => setMode(mode === 'run' ? 'view' : 'run')}
              />
              <Button
                label={active ? trans.__('Disable') : trans.__('Enable')}
                className="jp-mage-ToggleTrigger"
                onClick={() =>
                  void model.act(
                    active
                      ? trans.__('Disabling the trigger')
                      : trans.__('Enabling the trigger'),
                    () =>
                      model.api.updateTrigger(trigger.id, {
                        status: active ? 'inactive' : 'active'
                      })
                  )
                }
              />
              <Button
                label={trans.__('Edit')}
                className="jp-mage-EditTrigger"
                onClick={() => setMode('edit')}
              />
              <Button
                label={trans.__('Rotate token')}
                className="jp-mage-RotateToken"
                onClick={() => void rotate()}
              />
              <Button
                label={trans.__('Delete')}
                kind="reject"
                className="jp-mage-DeleteTrigger"
                onClick={() => void remove()}
              />
            </div>
          )}
          {mode === 'run' && (
            <RunNowForm
              ctx={props.ctx}
              trigger={trigger}
              onDone={() => setMode('view')}
            />
          )}
          {trigger.schedule_type === 'api' && (
            <TriggerEndpoint ctx={props.ctx} trigger={trigger} />
          )}
        </div>
      )}
    </li>
  );
}

/** The triggers section of a pipeline. */
export function TriggersSection(props: { ctx: IViewContext }): JSX.Element {
  const { trans, model } = props.ctx;
  const [creating, setCreating] = React.useState(false);
  const [expanded, setExpanded] = React.useState<Set<number>>(new Set());
  const uuid = model.selectedPipeline ?? '';

  const toggle = (id: number): void => {
    const next = new Set(expanded);
    if (next.has(id)) {
      next.delete(id);
    } else {
      next.add(id);
    }
    setExpanded(next);
  };

  return (
    <Section
      title={trans.__('Triggers')}
      className="jp-mage-Triggers"
      actions={
        <Button
          label={trans.__('New API trigger')}
          className="jp-mage-NewTrigger"
          onClick={() => setCreating(!creating)}
        />
      }
    >
      {creating && (
        <TriggerForm
          ctx={props.ctx}
          onCancel={() => setCreating(false)}
          onSubmit={async input => {
            const created = await model.act(
              trans.__('Creating the trigger'),
              () => model.api.createTrigger(uuid, input)
            );
            if (created) {
              setExpanded(new Set([...expanded, created.id]));
            }
            return created !== undefined;
          }}
        />
      )}
      {model.triggers.length === 0 && !creating ? (
        <p className="jp-mage-Hint">
          {trans.__(
            'No trigger yet. An API trigger gives this pipeline an HTTP endpoint.'
          )}
        </p>
      ) : (
        <ul className="jp-mage-TriggerList">
          {model.triggers.map(t => (
            <TriggerItem
              key={t.id}
              ctx={props.ctx}
              trigger={t}
              expanded={expanded.has(t.id)}
              onToggle={() => toggle(t.id)}
            />
          ))}
        </ul>
      )}
    </Section>
  );
}
