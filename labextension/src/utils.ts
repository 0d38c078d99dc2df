/**
 * Pure helpers: curl commands, dates, durations, block order.
 */
import type { IBlock, JSONObject } from './api';

/**
 * Quote a string for a POSIX shell (single quotes; `'` becomes `'\''`).
 */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** The two ways of calling an API trigger with its token. */
export interface ITriggerEndpoints {
  /** Token in the URL path: `.../pipeline_runs/<token>`. */
  pathUrl: string;
  /** Token in the `Authorization: Bearer` header: `.../api_trigger`. */
  bearerUrl: string;
}

/**
 * Build a trigger's token endpoints from the server's absolute base URL.
 *
 * @param baseUrl absolute base URL ending in `/`, e.g. `http://host:8888/jm/`
 */
export function triggerEndpoints(
  baseUrl: string,
  id: number,
  token: string
): ITriggerEndpoints {
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  return {
    pathUrl: `${base}api/pipeline_schedules/${id}/pipeline_runs/${encodeURIComponent(token)}`,
    bearerUrl: `${base}api/pipeline_schedules/${id}/api_trigger`
  };
}

/**
 * The request body of a trigger call, with the variables pre-filled.
 */
export function triggerBody(variables: JSONObject | null): string {
  return JSON.stringify(
    { pipeline_run: { variables: variables ?? {} } },
    null,
    2
  );
}

/**
 * A ready-to-run curl command with the token in the URL path (Mage's shape).
 */
export function curlWithPathToken(
  endpoints: ITriggerEndpoints,
  variables: JSONObject | null
): string {
  return [
    `curl -X POST ${shellQuote(endpoints.pathUrl)} \\`,
    "  --header 'Content-Type: application/json' \\",
    `  --data ${shellQuote(triggerBody(variables))}`
  ].join('\n');
}

/**
 * A ready-to-run curl command with the token as a Bearer header.
 */
export function curlWithBearer(
  endpoints: ITriggerEndpoints,
  token: string,
  variables: JSONObject | null
): string {
  return [
    `curl -X POST ${shellQuote(endpoints.bearerUrl)} \\`,
    `  --header ${shellQuote(`Authorization: Bearer ${token}`)} \\`,
    "  --header 'Content-Type: application/json' \\",
    `  --data ${shellQuote(triggerBody(variables))}`
  ].join('\n');
}

/**
 * Parse a server timestamp (`YYYY-MM-DD HH:MM:SS.ffffff+00:00`).
 *
 * @returns the time in ms since the epoch, or `null`
 */
export function parseTime(value: string | null | undefined): number | null {
  if (!value) {
    return null;
  }
  // Date.parse wants a `T` and at most millisecond precision.
  const iso = value
    .trim()
    .replace(' ', 'T')
    .replace(/(\.\d{3})\d+/, '$1');
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

/** A timestamp in the user's locale, or an em dash. */
export function formatTime(value: string | null | undefined): string {
  const ms = parseTime(value);
  return ms === null ? '—' : new Date(ms).toLocaleString();
}

/**
 * The duration between two timestamps, `now` standing in for a missing end.
 */
export function formatDuration(
  start: string | null | undefined,
  end: string | null | undefined,
  now: number = Date.now()
): string {
  const s = parseTime(start);
  if (s === null) {
    return '—';
  }
  const e = parseTime(end) ?? now;
  const seconds = Math.max(0, (e - s) / 1000);
  if (seconds < 10) {
    return `${seconds.toFixed(2)} s`;
  }
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ${Math.round(seconds % 60)} s`;
  }
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/**
 * Order blocks so that every block comes after its upstream blocks, keeping the
 * notebook order where the graph allows it. Blocks on a cycle (a validation
 * error the server reports) keep their notebook order at the end.
 */
export function dependencyOrder(blocks: IBlock[]): IBlock[] {
  const byUuid = new Map(blocks.map(b => [b.uuid, b]));
  const done = new Set<string>();
  const result: IBlock[] = [];
  let progressed = true;
  while (progressed && result.length < blocks.length) {
    progressed = false;
    for (const block of blocks) {
      if (done.has(block.uuid)) {
        continue;
      }
      const ready = (block.upstream_blocks ?? []).every(
        up => done.has(up) || !byUuid.has(up)
      );
      if (ready) {
        done.add(block.uuid);
        result.push(block);
        progressed = true;
        // Restart from the top so notebook order wins among ready blocks.
        break;
      }
    }
  }
  for (const block of blocks) {
    if (!done.has(block.uuid)) {
      result.push(block);
    }
  }
  return result;
}

/**
 * Pretty-print JSON for an editor.
 */
export function prettyJSON(value: unknown): string {
  return JSON.stringify(value ?? {}, null, 2);
}

/**
 * Parse a JSON object typed by a user.
 *
 * @returns the object, or an error message
 */
export function parseJSONObject(
  text: string
): { value: JSONObject; error: null } | { value: null; error: string } {
  if (!text.trim()) {
    return { value: {}, error: null };
  }
  try {
    const value = JSON.parse(text) as unknown;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      return { value: null, error: 'Variables must be a JSON object ({...}).' };
    }
    return { value: value as JSONObject, error: null };
  } catch (err) {
    return { value: null, error: (err as Error).message };
  }
}

/**
 * The text of an error the server recorded (string, traceback list or object).
 */
export function errorText(error: unknown): string {
  if (error === null || error === undefined || error === '') {
    return '';
  }
  if (typeof error === 'string') {
    return error;
  }
  if (Array.isArray(error)) {
    return error
      .map(e => (typeof e === 'string' ? e : JSON.stringify(e)))
      .join('\n');
  }
  if (typeof error === 'object') {
    const e = error as Record<string, unknown>;
    const parts: string[] = [];
    for (const key of ['traceback', 'stacktrace']) {
      const tb = e[key];
      if (tb) {
        parts.push(Array.isArray(tb) ? tb.join('\n') : String(tb));
      }
    }
    if (!parts.length) {
      const head = [
        e['error'] ?? e['ename'] ?? e['type'],
        e['message'] ?? e['evalue']
      ]
        .filter(x => x !== undefined && x !== null && x !== '')
        .map(String)
        .join(': ');
      parts.push(head || JSON.stringify(error, null, 2));
    }
    return parts.join('\n');
  }
  return String(error);
}

/** Remove ANSI colour codes (kernel tracebacks carry them). */
export function stripAnsi(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
}
