/**
 * The state of the Pipelines workspace (the main-area widget): the runs of all
 * pipelines with their filters and page, all triggers, and the open run.
 *
 * Two polls keep it live while the workspace is visible: the lists every few
 * seconds, and the open run at the run's pace (under a second) until the run
 * and all its blocks are finished, then not at all.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  FINAL_BLOCK_STATUSES,
  FINAL_RUN_STATUSES,
  IPipeline,
  IPipelineRun,
  IRunFilters,
  ITrigger,
  MageAPI
} from '../api';
import { reportError } from '../model';
import { MageRequestError } from '../request';

/** The workspace's tabs. */
export type WorkspaceTab = 'runs' | 'triggers';

/** The page sizes a user can pick for the run table. */
export const PAGE_SIZES = [10, 20, 50, 100] as const;

/** How often the open run is fetched while it is not finished (ms). */
export const RUN_POLL_INTERVAL = 750;

/** How often the lists are fetched while the workspace is visible (ms). */
export const LIST_POLL_INTERVAL = 2000;

/** What to show when the workspace is opened (command arguments). */
export interface IWorkspaceRequest {
  tab?: WorkspaceTab;
  /** Filter the runs by this pipeline. */
  pipelineUuid?: string;
  /** Show this trigger in the Triggers tab. */
  triggerId?: number;
  /** Open this run. */
  runId?: number;
}

/** Whether a run and all its blocks are done: nothing will change any more. */
export function isRunFinished(run: IPipelineRun): boolean {
  return (
    FINAL_RUN_STATUSES.includes(run.status) &&
    (run.block_runs ?? []).every(b => FINAL_BLOCK_STATUSES.includes(b.status))
  );
}

/**
 * The workspace model.
 */
export class WorkspaceModel implements IDisposable {
  /**
   * @param api the API client
   * @param trans translations for messages
   */
  constructor(
    readonly api: MageAPI,
    readonly trans: TranslationBundle
  ) {
    this._listPoll = new Poll({
      factory: () => this._tick(() => this._loadLists()),
      frequency: { interval: LIST_POLL_INTERVAL, backoff: true, max: 30_000 },
      standby: () => (this._visible ? 'when-hidden' : true),
      name: 'jupyter-mage:workspace-lists'
    });
    this._runPoll = new Poll({
      factory: () => this._tick(() => this._loadRun()),
      frequency: { interval: RUN_POLL_INTERVAL, backoff: true, max: 10_000 },
      // Stand by when no run is open or the open run is finished: a finished
      // run costs no request at all.
      standby: () =>
        !this._visible ||
        this._selectedRun === null ||
        (this._run !== null &&
          this._run.id === this._selectedRun &&
          isRunFinished(this._run))
          ? true
          : 'when-hidden',
      name: 'jupyter-mage:workspace-run'
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

  /** The tab shown. */
  get tab(): WorkspaceTab {
    return this._tab;
  }

  /** The run filters. */
  get filters(): IRunFilters {
    return this._filters;
  }

  /** Runs per page. */
  get pageSize(): number {
    return this._pageSize;
  }

  /** The offset of the page shown. */
  get offset(): number {
    return this._offset;
  }

  /** The page of runs shown, or `null` before the first answer. */
  get runs(): IPipelineRun[] | null {
    return this._runs;
  }

  /** How many runs match the filters, in all. */
  get runsCount(): number {
    return this._runsCount;
  }

  /** Whether there is a page after this one. */
  get hasNext(): boolean {
    return this._hasNext;
  }

  /** The pipelines, or `null` before the first answer. */
  get pipelines(): IPipeline[] | null {
    return this._pipelines;
  }

  /** All triggers, or `null` before the first answer. */
  get triggers(): ITrigger[] | null {
    return this._triggers;
  }

  /** The trigger to bring forward in the Triggers tab, if any. */
  get highlightedTrigger(): number | null {
    return this._highlightedTrigger;
  }

  /** The id of the open run, if any. */
  get selectedRun(): number | null {
    return this._selectedRun;
  }

  /** The open run with its block runs, once loaded. */
  get run(): IPipelineRun | null {
    return this._run !== null && this._run.id === this._selectedRun
      ? this._run
      : null;
  }

  /** The open run's pipeline (blocks and edges), once loaded. */
  get runPipeline(): IPipeline | null {
    return this._runPipeline;
  }

  /** Whether the open run's notebook is gone (its pipeline answers 404). */
  get runPipelineGone(): boolean {
    return this._runPipelineGone;
  }

  /** The block selected in the open run's DAG. */
  get selectedBlock(): string | null {
    return this._selectedBlock;
  }

  /** Whether a trigger's notebook is gone (its pipeline is not listed). */
  isTriggerOrphan(trigger: ITrigger): boolean {
    return (
      this._pipelines !== null &&
      !this._pipelines.some(p => p.uuid === trigger.pipeline_uuid)
    );
  }

  /**
   * Tell the model whether the workspace is visible: polling stops when not.
   */
  setVisible(visible: boolean): void {
    this._visible = visible;
    if (visible) {
      void this._listPoll.refresh();
      void this._runPoll.refresh();
    }
  }

  /** Show what a command asked for. */
  async show(request: IWorkspaceRequest): Promise<void> {
    if (request.pipelineUuid !== undefined) {
      this._filters = { pipeline_uuid: request.pipelineUuid };
      this._offset = 0;
    }
    if (request.triggerId !== undefined) {
      this._highlightedTrigger = request.triggerId;
    }
    if (request.tab) {
      this._tab = request.tab;
    }
    if (request.runId !== undefined) {
      this._tab = 'runs';
      await this.openRun(request.runId);
      return;
    }
    if (request.tab || request.pipelineUuid !== undefined) {
      this._closeRun();
    }
    this._changed.emit();
    await this.refresh();
  }

  /** Switch tab (closes the open run). */
  setTab(tab: WorkspaceTab): void {
    this._tab = tab;
    this._closeRun();
    this._changed.emit();
    void this.refresh();
  }

  /** Change the run filters; goes back to the first page. */
  setFilters(filters: IRunFilters): void {
    this._filters = filters;
    this._offset = 0;
    this._runs = null;
    this._changed.emit();
    void this.refresh();
  }

  /** Change the page size; goes back to the first page. */
  setPageSize(size: number): void {
    this._pageSize = size;
    this._offset = 0;
    this._changed.emit();
    void this.refresh();
  }

  /** Go to the next (`1`) or previous (`-1`) page. */
  page(step: 1 | -1): void {
    const offset = this._offset + step * this._pageSize;
    if (offset < 0 || (step > 0 && !this._hasNext)) {
      return;
    }
    this._offset = offset;
    this._changed.emit();
    void this.refresh();
  }

  /** Show the runs of one trigger. */
  showTriggerRuns(trigger: ITrigger): void {
    this._tab = 'runs';
    this._closeRun();
    this.setFilters({ pipeline_schedule_id: trigger.id });
  }

  /** Open a run: its DAG, live. */
  async openRun(id: number): Promise<void> {
    if (this._selectedRun !== id) {
      this._selectedRun = id;
      this._run = null;
      this._runPipeline = null;
      this._runPipelineGone = false;
      this._selectedBlock = null;
    }
    this._changed.emit();
    await this._guard(() => this._loadRun());
    void this._runPoll.refresh();
  }

  /** Close the open run (back to the run table). */
  closeRun(): void {
    this._closeRun();
    this._changed.emit();
    void this.refresh();
  }

  /** Select a block of the open run (or none). */
  selectBlock(uuid: string | null): void {
    this._selectedBlock = uuid;
    this._changed.emit();
  }

  /** Refresh what is shown now. */
  async refresh(): Promise<void> {
    await this._guard(async () => {
      await Promise.all([
        this._loadLists(),
        this._selectedRun === null ? Promise.resolve() : this._loadRun()
      ]);
    });
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
    let result: T;
    try {
      result = await action();
    } catch (err) {
      reportError(this.trans, label, err);
      return undefined;
    }
    await this.refresh();
    void this._runPoll.refresh();
    return result;
  }

  /** Dispose the model and its polls. */
  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._listPoll.dispose();
    this._runPoll.dispose();
    Signal.clearData(this);
  }

  private _closeRun(): void {
    this._selectedRun = null;
    this._run = null;
    this._runPipeline = null;
    this._runPipelineGone = false;
    this._selectedBlock = null;
  }

  private async _tick(load: () => Promise<void>): Promise<void> {
    try {
      await load();
      this._lastError = '';
    } catch (err) {
      this._report(err);
      throw err; // let the poll back off
    }
  }

  private async _guard(load: () => Promise<void>): Promise<void> {
    try {
      await load();
      this._lastError = '';
    } catch (err) {
      this._report(err);
    }
  }

  private _report(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    // The polls retry; tell the user once per distinct error, not every tick.
    if (message !== this._lastError) {
      this._lastError = message;
      reportError(this.trans, this.trans.__('Refreshing the workspace'), err);
    }
  }

  private async _loadLists(): Promise<void> {
    const filters = this._filters;
    const offset = this._offset;
    const size = this._pageSize;
    const [pipelines, triggers, page] = await Promise.all([
      this.api.listPipelines(),
      this.api.listAllTriggers(),
      // The open run's view does not show the table: skip its page.
      this._selectedRun === null && this._tab === 'runs'
        ? this.api.listAllRuns(filters, size, offset)
        : Promise.resolve(null)
    ]);
    this._pipelines = pipelines;
    this._triggers = triggers;
    // Ignore an answer to filters or a page the user has left meanwhile.
    if (
      page !== null &&
      filters === this._filters &&
      offset === this._offset &&
      size === this._pageSize
    ) {
      this._runs = page.pipeline_runs;
      this._runsCount = page.metadata.count;
      this._hasNext = page.metadata.next;
    }
    this._changed.emit();
  }

  private async _loadRun(): Promise<void> {
    const id = this._selectedRun;
    if (id === null) {
      return;
    }
    const run = await this.api.getRun(id);
    if (this._selectedRun !== id) {
      return;
    }
    this._run = run;
    if (this._runPipeline === null && !this._runPipelineGone) {
      try {
        const pipeline = await this.api.getPipeline(run.pipeline_uuid);
        if (this._selectedRun === id) {
          this._runPipeline = pipeline;
        }
      } catch (err) {
        if (err instanceof MageRequestError && err.status === 404) {
          this._runPipelineGone = true;
        } else {
          throw err;
        }
      }
    }
    this._changed.emit();
  }

  private _changed = new Signal<this, void>(this);
  private _isDisposed = false;
  private _visible = false;
  private _lastError = '';
  private _listPoll: Poll;
  private _runPoll: Poll;
  private _tab: WorkspaceTab = 'runs';
  private _filters: IRunFilters = {};
  private _pageSize = 20;
  private _offset = 0;
  private _runs: IPipelineRun[] | null = null;
  private _runsCount = 0;
  private _hasNext = false;
  private _pipelines: IPipeline[] | null = null;
  private _triggers: ITrigger[] | null = null;
  private _highlightedTrigger: number | null = null;
  private _selectedRun: number | null = null;
  private _run: IPipelineRun | null = null;
  private _runPipeline: IPipeline | null = null;
  private _runPipelineGone = false;
  private _selectedBlock: string | null = null;
}
