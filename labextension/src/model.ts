/**
 * The sidebar's state: what is selected, what the server last said, and a poll
 * that keeps runs live while the sidebar is visible.
 */
import { Notification, showDialog, Dialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import { IDisposable } from '@lumino/disposable';

import {
  FINAL_BLOCK_STATUSES,
  FINAL_RUN_STATUSES,
  IPipeline,
  IPipelineRun,
  ITrigger,
  MageAPI
} from './api';
import { MageRequestError } from './request';

/** How many runs the run list shows. */
export const RUNS_PAGE_SIZE = 20;

/**
 * Report an error to the user as a notification, and return its message.
 *
 * @param trans translations
 * @param action what the user was doing, e.g. "Creating the trigger"
 * @param err the error thrown
 */
export function reportError(
  trans: TranslationBundle,
  action: string,
  err: unknown
): string {
  const message = err instanceof Error ? err.message : String(err);
  Notification.error(trans.__('%1 failed: %2', action, message), {
    autoClose: 8000
  });
  console.error(`jupyter-mage: ${action} failed`, err);
  return message;
}

/**
 * The sidebar model.
 */
export class MageModel implements IDisposable {
  /**
   * @param api the API client
   * @param trans translations for messages
   * @param interval poll interval in ms
   */
  constructor(
    readonly api: MageAPI,
    readonly trans: TranslationBundle,
    interval = 2000
  ) {
    this._poll = new Poll({
      factory: () => this._tick(),
      frequency: { interval, backoff: true, max: 30_000 },
      // Poll only while the sidebar is shown and the browser tab is visible.
      standby: () => (this._visible ? 'when-hidden' : true),
      name: 'jupyter-mage:runs'
    });
  }

  /** Emitted whenever anything shown changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Whether the model is disposed. */
  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** The pipelines, or `null` before the first answer. */
  get pipelines(): IPipeline[] | null {
    return this._pipelines;
  }

  /** The uuid of the open pipeline, if any. */
  get selectedPipeline(): string | null {
    return this._selectedPipeline;
  }

  /** The open pipeline's detail (with validation errors). */
  get pipeline(): IPipeline | null {
    return this._pipeline;
  }

  /** The open pipeline's triggers. */
  get triggers(): ITrigger[] {
    return this._triggers;
  }

  /** The open pipeline's runs, newest first. */
  get runs(): IPipelineRun[] {
    return this._runs;
  }

  /** How many runs the open pipeline has in all. */
  get runsCount(): number {
    return this._runsCount;
  }

  /** The id of the open run, if any. */
  get selectedRun(): number | null {
    return this._selectedRun;
  }

  /** The open run with its block runs. */
  get run(): IPipelineRun | null {
    return this._run;
  }

  /** Whether the server extension was found missing. */
  get serverMissing(): boolean {
    return this._serverMissing;
  }

  /** The interval of the poll, in ms. */
  set interval(value: number) {
    this._poll.frequency = { ...this._poll.frequency, interval: value };
  }

  /**
   * Tell the model whether the sidebar is visible: polling stops when it is not.
   */
  setVisible(visible: boolean): void {
    this._visible = visible;
    if (visible) {
      void this._poll.refresh();
    }
  }

  /** Open a pipeline (or go back to the list with `null`). */
  async selectPipeline(uuid: string | null): Promise<void> {
    this._selectedPipeline = uuid;
    this._pipeline = null;
    this._triggers = [];
    this._runs = [];
    this._runsCount = 0;
    this._selectedRun = null;
    this._run = null;
    this._changed.emit();
    await this.refresh(true);
  }

  /** Open a run (or go back to its pipeline with `null`). */
  async selectRun(id: number | null): Promise<void> {
    this._selectedRun = id;
    this._run = null;
    this._changed.emit();
    await this.refresh(true);
  }

  /**
   * Refresh what is shown now.
   *
   * @param full also refresh what the poll does not (pipeline detail, triggers)
   */
  async refresh(full = false): Promise<void> {
    try {
      await this._load(full);
      this._lastPollError = '';
    } catch (err) {
      this._handleError(err);
    }
  }

  /** Restart the poll soon, e.g. after starting a run. */
  kick(): void {
    void this._poll.refresh();
  }

  /**
   * Run an action of the user; refresh afterwards; report any error.
   *
   * @returns the action's result, or `undefined` if it failed
   */
  async act<T>(
    label: string,
    action: () => Promise<T>
  ): Promise<T | undefined> {
    try {
      const result = await action();
      await this.refresh(true);
      this.kick();
      return result;
    } catch (err) {
      if (!this._checkServerMissing(err)) {
        reportError(this.trans, label, err);
      }
      return undefined;
    }
  }

  /** Dispose the model and its poll. */
  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _tick(): Promise<void> {
    try {
      await this._load(false);
      this._lastPollError = '';
    } catch (err) {
      this._handleError(err);
      throw err; // let the poll back off
    }
  }

  private async _load(full: boolean): Promise<void> {
    if (this._serverMissing) {
      return;
    }
    const uuid = this._selectedPipeline;
    if (uuid === null) {
      this._pipelines = await this.api.listPipelines();
      this._changed.emit();
      return;
    }
    const runId = this._selectedRun;
    const jobs: Promise<void>[] = [];
    if (full || this._pipeline === null) {
      jobs.push(
        this.api.getPipeline(uuid).then(p => {
          if (this._selectedPipeline === uuid) {
            this._pipeline = p;
          }
        }),
        this.api.listTriggers(uuid).then(t => {
          if (this._selectedPipeline === uuid) {
            this._triggers = t;
          }
        })
      );
    }
    if (runId === null) {
      jobs.push(
        this.api.listRuns(uuid, RUNS_PAGE_SIZE).then(page => {
          if (this._selectedPipeline === uuid) {
            this._runs = page.pipeline_runs;
            this._runsCount = page.metadata.count;
          }
        })
      );
    } else if (
      full ||
      this._run === null ||
      this._run.id !== runId ||
      !FINAL_RUN_STATUSES.includes(this._run.status) ||
      (this._run.block_runs ?? []).some(
        b => !FINAL_BLOCK_STATUSES.includes(b.status)
      )
    ) {
      jobs.push(
        this.api.getRun(runId).then(run => {
          if (this._selectedRun === runId) {
            this._run = run;
          }
        })
      );
    }
    await Promise.all(jobs);
    this._changed.emit();
  }

  private _handleError(err: unknown): void {
    if (this._checkServerMissing(err)) {
      return;
    }
    const message = err instanceof Error ? err.message : String(err);
    // The poll retries; tell the user once per distinct error, not on every tick.
    if (message !== this._lastPollError) {
      this._lastPollError = message;
      reportError(this.trans, this.trans.__('Refreshing pipelines'), err);
    }
  }

  /**
   * Detect a missing server extension (the list route answers 404) and explain
   * it once.
   */
  private _checkServerMissing(err: unknown): boolean {
    if (
      !(err instanceof MageRequestError) ||
      err.status !== 404 ||
      this._selectedPipeline !== null ||
      err.errorType !== undefined
    ) {
      return false;
    }
    if (!this._serverMissing) {
      this._serverMissing = true;
      this._changed.emit();
      void showDialog({
        title: this.trans.__('jupyter-mage server extension missing'),
        body: this.trans.__(
          'The Pipelines sidebar needs the jupyter_mage server extension, but the server answered 404 for %1. Install jupyter_mage in the environment of the Jupyter server and enable it (`jupyter server extension enable jupyter_mage`), then restart the server.',
          this.api.url('api/pipelines')
        ),
        buttons: [Dialog.okButton()]
      });
    }
    return true;
  }

  private _changed = new Signal<this, void>(this);
  private _isDisposed = false;
  private _poll: Poll;
  private _visible = false;
  private _lastPollError = '';
  private _serverMissing = false;
  private _pipelines: IPipeline[] | null = null;
  private _selectedPipeline: string | null = null;
  private _pipeline: IPipeline | null = null;
  private _triggers: ITrigger[] = [];
  private _runs: IPipelineRun[] = [];
  private _runsCount = 0;
  private _selectedRun: number | null = null;
  private _run: IPipelineRun | null = null;
}
