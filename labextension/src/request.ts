import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/**
 * An error answered by the jupyter-mage server, with the parsed JSON body.
 */
export class MageRequestError extends ServerConnection.ResponseError {
  /**
   * Create an error from a failed response.
   *
   * @param response the HTTP response
   * @param message the message to show
   * @param body the parsed body, if it was JSON
   */
  constructor(
    response: Response,
    message: string,
    readonly body: unknown
  ) {
    super(response, message);
  }

  /** The HTTP status code. */
  get status(): number {
    return this.response.status;
  }

  /** The error type of the server's JSON error body (`error.type`), if any. */
  get errorType(): string | undefined {
    const error = (this.body as { error?: { type?: unknown } } | null)?.error;
    return typeof error?.type === 'string' ? error.type : undefined;
  }
}

/**
 * Call a jupyter-mage route relative to the server's base URL.
 *
 * Goes through `ServerConnection.makeRequest`, so the token and XSRF headers are
 * those of JupyterLab, and the URL is built from `settings.baseUrl` (never from `/`),
 * which keeps it working under a non-root base URL.
 *
 * @param path route relative to the base URL, e.g. `api/pipelines`
 * @param settings the server connection settings of the application
 * @param init request options; a JSON body must already be a string
 * @returns the parsed JSON answer (or `null` for an empty body)
 * @throws MageRequestError with the server's `message` when the status is not 2xx
 */
export async function requestAPI<T>(
  path: string,
  settings: ServerConnection.ISettings,
  init: RequestInit = {}
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, path);
  const headers = new Headers(init.headers);
  if (init.body !== undefined && !headers.has('Content-Type')) {
    headers.set('Content-Type', 'application/json');
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      url,
      { ...init, headers },
      settings
    );
  } catch (err) {
    throw new ServerConnection.NetworkError(err as TypeError);
  }
  const text = await response.text();
  let data: unknown = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (e.g. an HTML error page of a proxy): keep the raw text.
  }
  if (!response.ok) {
    const body = data as { message?: unknown } | null;
    const message =
      body && typeof body === 'object' && typeof body.message === 'string'
        ? body.message
        : `${response.status} ${response.statusText}`.trim();
    throw new MageRequestError(response, message, data);
  }
  return data as T;
}

/**
 * Percent-encode a pipeline uuid for a URL path (it may contain `/`).
 */
export function encodeUuid(uuid: string): string {
  return encodeURIComponent(uuid);
}
