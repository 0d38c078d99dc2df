/**
 * Small React pieces shared by the sidebar views.
 */
import * as React from 'react';
import { Clipboard, Dialog, showDialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Notification } from '@jupyterlab/apputils';

import { JSONObject } from '../api';
import { parseJSONObject } from '../utils';

/** A status shown as a coloured badge (`jp-mage-Status-<status>`). */
/**
 * Ask before cancelling a run (its running block is interrupted); cancel it
 * if the user agrees. One dialog for the sidebar and the workspace.
 */
export async function confirmCancelRun(
  trans: TranslationBundle,
  runId: number,
  cancel: () => Promise<void>
): Promise<void> {
  const answer = await showDialog({
    title: trans.__('Cancel run %1?', runId),
    body: trans.__('The running block is interrupted.'),
    buttons: [
      Dialog.cancelButton({ label: trans.__('Keep running') }),
      Dialog.warnButton({ label: trans.__('Cancel run') })
    ]
  });
  if (answer.button.accept) {
    await cancel();
  }
}

export function StatusBadge(props: { status: string }): JSX.Element {
  return (
    <span
      className={`jp-mage-Status jp-mage-Status-${props.status}`}
      data-status={props.status}
    >
      {props.status}
    </span>
  );
}

/** A small text button. */
export function Button(props: {
  label: string;
  onClick: () => void;
  title?: string;
  kind?: 'accept' | 'warn' | 'reject';
  disabled?: boolean;
  className?: string;
}): JSX.Element {
  const kind = props.kind ? ` jp-mage-Button-${props.kind}` : '';
  return (
    <button
      type="button"
      className={`jp-mage-Button${kind} ${props.className ?? ''}`.trim()}
      title={props.title ?? props.label}
      disabled={props.disabled}
      onClick={e => {
        e.stopPropagation();
        props.onClick();
      }}
    >
      {props.label}
    </button>
  );
}

/** A titled section of a view. */
export function Section(props: {
  title: string;
  className?: string;
  actions?: React.ReactNode;
  children?: React.ReactNode;
}): JSX.Element {
  return (
    <section className={`jp-mage-Section ${props.className ?? ''}`.trim()}>
      <header className="jp-mage-SectionHeader">
        <h3>{props.title}</h3>
        <div className="jp-mage-SectionActions">{props.actions}</div>
      </header>
      {props.children}
    </section>
  );
}

/** Preformatted text with a copy button. */
export function CopyBlock(props: {
  text: string;
  label: string;
  trans: TranslationBundle;
  className?: string;
}): JSX.Element {
  return (
    <div className={`jp-mage-CopyBlock ${props.className ?? ''}`.trim()}>
      <div className="jp-mage-CopyBlockHeader">
        <span>{props.label}</span>
        <Button
          label={props.trans.__('Copy')}
          title={props.trans.__('Copy to the clipboard')}
          className="jp-mage-CopyButton"
          onClick={() => {
            Clipboard.copyToSystem(props.text);
            Notification.success(props.trans.__('Copied: %1', props.label), {
              autoClose: 2000
            });
          }}
        />
      </div>
      <pre className="jp-mage-Code">{props.text}</pre>
    </div>
  );
}

/**
 * A JSON object editor: a text area that shows invalid JSON in place and
 * reports the parsed object (or `null` while invalid).
 */
export function JSONEditor(props: {
  value: string;
  onChange: (text: string, parsed: JSONObject | null) => void;
  label: string;
  rows?: number;
  className?: string;
}): JSX.Element {
  const { error } = parseJSONObject(props.value);
  return (
    <label
      className={`jp-mage-JSONEditor ${error ? 'jp-mage-mod-invalid' : ''} ${
        props.className ?? ''
      }`.trim()}
    >
      <span className="jp-mage-FieldLabel">{props.label}</span>
      <textarea
        className="jp-mage-Textarea"
        spellCheck={false}
        rows={props.rows ?? 4}
        value={props.value}
        aria-invalid={error ? true : false}
        onChange={e => {
          const text = e.target.value;
          props.onChange(text, parseJSONObject(text).value);
        }}
      />
      {error && <span className="jp-mage-FieldError">{error}</span>}
    </label>
  );
}

/** A labelled text input. */
export function TextField(props: {
  label: string;
  value: string;
  onChange: (value: string) => void;
  placeholder?: string;
  className?: string;
}): JSX.Element {
  return (
    <label className={`jp-mage-Field ${props.className ?? ''}`.trim()}>
      <span className="jp-mage-FieldLabel">{props.label}</span>
      <input
        className="jp-mage-Input"
        type="text"
        value={props.value}
        placeholder={props.placeholder}
        onChange={e => props.onChange(e.target.value)}
      />
    </label>
  );
}
