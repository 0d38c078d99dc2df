/**
 * Typed calls of the jupyter-mage HTTP API (see the project's contract).
 *
 * Field names mirror the server's JSON keys, which are Mage's.
 */
import { ServerConnection } from '@jupyterlab/services';
import { URLExt } from '@jupyterlab/coreutils';

import { encodeUuid, requestAPI } from './request';

/** A JSON value. */
export type JSONValue =
  string | number | boolean | null | JSONValue[] | { [key: string]: JSONValue };

/** A JSON object, as variables are. */
export type JSONObject = { [key: string]: JSONValue };

/** The block types a cell tag can name. */
export const BLOCK_TYPES = [
  'data_loader',
  'transformer',
  'data_exporter',
  'custom',
  'sensor',
  'scratchpad',
  'conditional',
  'callback'
] as const;

/** One of {@link BLOCK_TYPES}. */
export type BlockType = (typeof BLOCK_TYPES)[number];

/** A block of a pipeline. */
export interface IBlock {
  uuid: string;
  type: string;
  upstream_blocks: string[];
  downstream_blocks: string[];
  [key: string]: unknown;
}

/** A pipeline (a notebook with block cells). */
export interface IPipeline {
  uuid: string;
  name: string;
  blocks: IBlock[];
  variables: JSONObject | null;
  /** Validation errors, as strings or `{message}` objects. */
  errors?: unknown[];
  validation_errors?: unknown[];
  [key: string]: unknown;
}

/** Trigger settings. */
export interface ITriggerSettings {
  timeout?: number | null;
  timeout_status?: string | null;
  pipeline_run_limit?: number | null;
  skip_if_previous_running?: boolean;
  allow_blocks_to_fail?: boolean;
  [key: string]: unknown;
}

// Statuses, as `jupyter_mage/statuses.py` defines them (Mage's words);
// tests/unit/test_statuses.py keeps the two in step.

/** A pipeline run's status. */
export const RUN_STATUSES = [
  'initial',
  'running',
  'completed',
  'failed',
  'cancelled'
] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

/** A block run's status. */
export const BLOCK_RUN_STATUSES = [
  'initial',
  'queued',
  'running',
  'completed',
  'failed',
  'cancelled',
  'upstream_failed',
  'condition_failed'
] as const;
export type BlockRunStatus = (typeof BLOCK_RUN_STATUSES)[number];

/** A trigger's status. */
export const TRIGGER_STATUSES = ['active', 'inactive'] as const;
export type TriggerStatus = (typeof TRIGGER_STATUSES)[number];

/** A trigger (`pipeline_schedule`). */
export interface ITrigger {
  id: number;
  name: string;
  description: string | null;
  pipeline_uuid: string;
  schedule_type: string;
  status: TriggerStatus;
  variables: JSONObject | null;
  settings: ITriggerSettings | null;
  token: string | null;
  created_at: string | null;
  updated_at: string | null;
  last_pipeline_run_status?: RunStatus | null;
  pipeline_runs_count?: number;
  /** The last refused calls of the trigger's token routes, latest first (at most 10). */
  recent_refusals?: ITriggerRefusal[] | null;
}

/** A refused call of a trigger's token route (never the token itself). */
export interface ITriggerRefusal {
  time: string;
  status: number;
  reason: string;
}

/** Filters of the list of all runs (`GET api/pipeline_runs`). */
export interface IRunFilters {
  pipeline_uuid?: string;
  pipeline_schedule_id?: number;
  status?: RunStatus;
}

/** The fields a user may write on a trigger. */
export interface ITriggerInput {
  name?: string;
  description?: string;
  schedule_type?: string;
  status?: TriggerStatus;
  variables?: JSONObject;
  settings?: ITriggerSettings;
}

/** A block run. */
export interface IBlockRun {
  id: number;
  pipeline_run_id: number;
  block_uuid: string;
  status: BlockRunStatus;
  started_at: string | null;
  completed_at: string | null;
  created_at: string | null;
  updated_at: string | null;
  metrics: { error?: unknown; [key: string]: unknown } | null;
  outputs?: unknown[];
  [key: string]: unknown;
}

/** A pipeline run. */
export interface IPipelineRun {
  id: number;
  pipeline_schedule_id: number | null;
  pipeline_uuid: string;
  execution_date: string | null;
  status: RunStatus;
  started_at: string | null;
  completed_at: string | null;
  created_at: string | null;
  updated_at: string | null;
  variables: JSONObject | null;
  event_variables?: JSONObject | null;
  metrics?: { error?: unknown; [key: string]: unknown } | null;
  block_runs?: IBlockRun[];
  executed_notebook?: string | null;
  pipeline_schedule_name?: string | null;
  [key: string]: unknown;
}

/** The log of a block run. */
export interface IBlockLog {
  block_run_id?: number;
  block_uuid?: string;
  content?: string | null;
  error?: unknown;
  [key: string]: unknown;
}

/** A page of runs. */
export interface IRunsPage {
  pipeline_runs: IPipelineRun[];
  metadata: { count: number; next: boolean };
}

/** Run statuses after which nothing changes any more. */
export const FINAL_RUN_STATUSES: readonly RunStatus[] = [
  'completed',
  'failed',
  'cancelled'
];

/** Block-run statuses after which nothing changes any more. */
export const FINAL_BLOCK_STATUSES: readonly BlockRunStatus[] = [
  ...FINAL_RUN_STATUSES,
  'upstream_failed',
  'condition_failed'
];

/**
 * The API client, bound to the application's server settings.
 */
export class MageAPI {
  /**
   * @param serverSettings the application's `serviceManager.serverSettings`
   */
  constructor(readonly serverSettings: ServerConnection.ISettings) {}

  /** List the pipelines under the server's root dir. */
  async listPipelines(): Promise<IPipeline[]> {
    const data = await this._get<{ pipelines: IPipeline[] }>('api/pipelines');
    return data.pipelines ?? [];
  }

  /** Get one pipeline, validation errors included. */
  async getPipeline(uuid: string): Promise<IPipeline> {
    const data = await this._get<{ pipeline: IPipeline }>(
      `api/pipelines/${encodeUuid(uuid)}`
    );
    return data.pipeline;
  }

  /** Write a pipeline's global variables (`metadata.mage.variables`). */
  async setPipelineVariables(
    uuid: string,
    variables: JSONObject
  ): Promise<IPipeline> {
    const data = await this._send<{ pipeline: IPipeline }>(
      'PUT',
      `mage/pipelines/${encodeUuid(uuid)}/variables`,
      { variables }
    );
    return data.pipeline;
  }

  /** List a pipeline's triggers. */
  async listTriggers(uuid: string): Promise<ITrigger[]> {
    const data = await this._get<{ pipeline_schedules: ITrigger[] }>(
      `api/pipelines/${encodeUuid(uuid)}/pipeline_schedules`
    );
    return data.pipeline_schedules ?? [];
  }

  /** List all triggers, of every pipeline (also of notebooks gone since). */
  async listAllTriggers(): Promise<ITrigger[]> {
    const data = await this._get<{ pipeline_schedules: ITrigger[] }>(
      'api/pipeline_schedules'
    );
    return data.pipeline_schedules ?? [];
  }

  /** Create a trigger on a pipeline. */
  async createTrigger(uuid: string, input: ITriggerInput): Promise<ITrigger> {
    const data = await this._send<{ pipeline_schedule: ITrigger }>(
      'POST',
      `api/pipelines/${encodeUuid(uuid)}/pipeline_schedules`,
      { pipeline_schedule: { schedule_type: 'api', ...input } }
    );
    return data.pipeline_schedule;
  }

  /** Update a trigger. */
  async updateTrigger(id: number, input: ITriggerInput): Promise<ITrigger> {
    const data = await this._send<{ pipeline_schedule: ITrigger }>(
      'PUT',
      `api/pipeline_schedules/${id}`,
      { pipeline_schedule: input }
    );
    return data.pipeline_schedule;
  }

  /** Issue a new token for a trigger; the old one stops working. */
  async rotateToken(id: number): Promise<ITrigger> {
    const data = await this._send<{ pipeline_schedule: ITrigger }>(
      'PUT',
      `api/pipeline_schedules/${id}`,
      { pipeline_schedule: { rotate_token: true } }
    );
    return data.pipeline_schedule;
  }

  /** Delete a trigger (its runs are kept). */
  async deleteTrigger(id: number): Promise<true> {
    await this._send('DELETE', `api/pipeline_schedules/${id}`);
    return true;
  }

  /** Start a run of a trigger now, as the logged-in user. */
  async runNow(id: number, variables: JSONObject): Promise<IPipelineRun> {
    const data = await this._send<{ pipeline_run: IPipelineRun }>(
      'POST',
      `api/pipeline_schedules/${id}/pipeline_runs`,
      { pipeline_run: { variables } }
    );
    return data.pipeline_run;
  }

  /** List a pipeline's runs, newest first. */
  async listRuns(uuid: string, limit = 20, offset = 0): Promise<IRunsPage> {
    const query = URLExt.objectToQueryString({
      pipeline_uuid: uuid,
      _limit: String(limit),
      _offset: String(offset)
    });
    const data = await this._get<IRunsPage>(`api/pipeline_runs${query}`);
    return {
      pipeline_runs: data.pipeline_runs ?? [],
      metadata: data.metadata ?? { count: 0, next: false }
    };
  }

  /** List the runs of all pipelines, newest first, filtered and paged. */
  async listAllRuns(
    filters: IRunFilters,
    limit: number,
    offset: number
  ): Promise<IRunsPage> {
    const params: Record<string, string> = {
      _limit: String(limit),
      _offset: String(offset)
    };
    if (filters.pipeline_uuid) {
      params.pipeline_uuid = filters.pipeline_uuid;
    }
    if (filters.pipeline_schedule_id !== undefined) {
      params.pipeline_schedule_id = String(filters.pipeline_schedule_id);
    }
    if (filters.status) {
      params.status = filters.status;
    }
    const data = await this._get<IRunsPage>(
      `api/pipeline_runs${URLExt.objectToQueryString(params)}`
    );
    return {
      pipeline_runs: data.pipeline_runs ?? [],
      metadata: data.metadata ?? { count: 0, next: false }
    };
  }

  /** Get a run with its block runs. */
  async getRun(id: number): Promise<IPipelineRun> {
    const data = await this._get<{ pipeline_run: IPipelineRun }>(
      `api/pipeline_runs/${id}`
    );
    return data.pipeline_run;
  }

  /** Cancel a run (interrupts its kernel). */
  async cancelRun(id: number): Promise<IPipelineRun> {
    const data = await this._send<{ pipeline_run: IPipelineRun }>(
      'PUT',
      `api/pipeline_runs/${id}`,
      { pipeline_run: { status: 'cancelled' } }
    );
    return data.pipeline_run;
  }

  /** Re-run the blocks of a run that did not complete. */
  async retryRun(id: number): Promise<IPipelineRun> {
    const data = await this._send<{ pipeline_run: IPipelineRun }>(
      'PUT',
      `api/pipeline_runs/${id}`,
      { pipeline_run: { pipeline_run_action: 'retry_blocks' } }
    );
    return data.pipeline_run;
  }

  /** The output summaries of a block run. */
  async blockOutputs(id: number): Promise<unknown[]> {
    const data = await this._get<{ outputs: unknown[] }>(
      `api/block_runs/${id}/outputs`
    );
    return data.outputs ?? [];
  }

  /** The captured log of a block run. */
  async blockLog(id: number): Promise<IBlockLog> {
    const data = await this._get<{ log?: IBlockLog; logs?: IBlockLog }>(
      `api/block_runs/${id}/logs`
    );
    return data.log ?? data.logs ?? {};
  }

  /**
   * The URL of a server route, absolute, built from the server's base URL.
   */
  url(path: string): string {
    return absoluteUrl(URLExt.join(this.serverSettings.baseUrl, path));
  }

  private _get<T>(path: string): Promise<T> {
    return requestAPI<T>(path, this.serverSettings, { method: 'GET' });
  }

  private _send<T = unknown>(
    method: string,
    path: string,
    body?: unknown
  ): Promise<T> {
    return requestAPI<T>(path, this.serverSettings, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body)
    });
  }
}

/**
 * Make a URL absolute against the page's location (the base URL may be a path).
 */
export function absoluteUrl(url: string): string {
  try {
    return new URL(url, window.location.href).href;
  } catch {
    return url;
  }
}
