/**
 * Helpers of the jupyter-mage UI tests: test notebooks, sidebar selectors,
 * screenshots and running shell commands read from the page.
 */
import { expect, Locator, Page } from '@playwright/test';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

/** Where the tests save their screenshots (git-ignored). */
export const SCREENSHOT_DIR = path.resolve(__dirname, '..', 'screenshots');
/** Where the README's screenshots live (committed; refreshed on demand). */
const DOCS_DIR = path.resolve(__dirname, '..', '..', 'docs', 'screenshots');

/** A code cell of a test notebook. */
interface ICell {
  source: string;
  tags?: string[];
}

/** A notebook (nbformat 4) with the given code cells and global variables. */
export function notebook(
  cells: ICell[],
  variables: Record<string, unknown> = {}
): string {
  return JSON.stringify({
    cells: cells.map(c => ({
      cell_type: 'code',
      execution_count: null,
      metadata: c.tags ? { tags: c.tags } : {},
      outputs: [],
      source: c.source
    })),
    metadata: {
      kernelspec: {
        display_name: 'Python 3 (ipykernel)',
        language: 'python',
        name: 'python3'
      },
      language_info: { name: 'python' },
      mage: { variables }
    },
    nbformat: 4,
    nbformat_minor: 5
  });
}

/** A three-block pipeline: load → transform → export. */
export const ETL_NOTEBOOK = notebook(
  [
    {
      tags: ['data_loader'],
      source:
        '@data_loader\n' +
        'def load_numbers(*args, **kwargs):\n' +
        "    return [{'n': i} for i in range(kwargs.get('count', 10))]\n"
    },
    {
      tags: ['transformer'],
      source:
        '@transformer\n' +
        'def total(rows, *args, **kwargs):\n' +
        "    return sum(r['n'] for r in rows)\n"
    },
    {
      tags: ['data_exporter'],
      source:
        '@data_exporter\n' +
        'def export(value, *args, **kwargs):\n' +
        "    print('total is', value, 'for env', kwargs['env'])\n" +
        '    return value\n'
    }
  ],
  { count: 10 }
);

/** A pipeline whose second block fails. */
export const FAILING_NOTEBOOK = notebook([
  {
    tags: ['data_loader'],
    source:
      '@data_loader\n' +
      'def load_rows(*args, **kwargs):\n' +
      "    return {'rows': 3}\n"
  },
  {
    tags: ['transformer'],
    source:
      '@transformer\n' +
      'def check_rows(data, *args, **kwargs):\n' +
      '    raise ValueError(f"bad row count: {data[\'rows\']}")\n'
  },
  {
    tags: ['data_exporter'],
    source:
      '@data_exporter\n' +
      'def never_runs(data, *args, **kwargs):\n' +
      '    return data\n'
  }
]);

/**
 * Save a screenshot under `ui-tests/screenshots/` and print its path. With
 * `MAGE_UPDATE_DOCS_SCREENSHOTS=1`, also copy it to `docs/screenshots/`.
 */
export async function screenshot(
  target: Page | Locator,
  name: string
): Promise<string> {
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  await target.screenshot({ path: file });
  console.log(`screenshot: ${file}`);
  if (process.env.MAGE_UPDATE_DOCS_SCREENSHOTS === '1') {
    fs.mkdirSync(DOCS_DIR, { recursive: true });
    fs.copyFileSync(file, path.join(DOCS_DIR, `${name}.png`));
  }
  return file;
}

/**
 * Run a command in bash, as a user pasting it into a shell would.
 *
 * @returns what it printed on stdout
 */
export function runInShell(command: string): string {
  return execFileSync('bash', ['-c', command], {
    encoding: 'utf-8',
    timeout: 60_000
  });
}

/** Selectors and actions of the Pipelines sidebar. */
export class MageSidebar {
  constructor(readonly page: Page) {}

  /** The sidebar panel. */
  get panel(): Locator {
    return this.page.locator('#jupyter-mage-sidebar');
  }

  /** The sidebar's tab in the left bar (its icon). */
  get tab(): Locator {
    return this.page.locator(
      '.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="jupyter-mage-sidebar"]'
    );
  }

  /** Open the sidebar from its icon. */
  async open(): Promise<void> {
    await this.tab.click();
    await expect(this.panel).toBeVisible();
    await this.widen();
  }

  /** Drag the left panel's splitter so the sidebar is wide enough to read. */
  async widen(width = 440): Promise<void> {
    const box = await this.panel.boundingBox();
    const handle = this.page
      .locator('#jp-main-split-panel > .lm-SplitPanel-handle')
      .first();
    const hbox = await handle.boundingBox();
    if (!box || !hbox || box.width >= width) {
      return;
    }
    const y = hbox.y + hbox.height / 2;
    await this.page.mouse.move(hbox.x + hbox.width / 2, y);
    await this.page.mouse.down();
    await this.page.mouse.move(hbox.x + width - box.width, y, { steps: 5 });
    await this.page.mouse.up();
  }

  /** A pipeline in the list. */
  pipelineItem(uuid: string): Locator {
    return this.panel.locator(
      `.jp-mage-PipelineItem[data-pipeline-uuid="${uuid}"]`
    );
  }

  /** Open a pipeline's view (triggers and runs). */
  async openPipeline(uuid: string): Promise<void> {
    await this.pipelineItem(uuid).locator('.jp-mage-PipelineName').click();
    await expect(
      this.panel.locator(`.jp-mage-PipelineView[data-pipeline-uuid="${uuid}"]`)
    ).toBeVisible();
    await expect(this.panel.locator('.jp-mage-Triggers')).toBeVisible();
  }

  /** Create an API trigger from the form. */
  async createTrigger(name: string, variables?: string): Promise<Locator> {
    await this.panel.locator('.jp-mage-NewTrigger').click();
    const form = this.panel.locator('.jp-mage-TriggerForm');
    await form.locator('.jp-mage-TriggerName input').fill(name);
    await form
      .locator('.jp-mage-TriggerDescription input')
      .fill(`Created by the UI test ${name}`);
    if (variables !== undefined) {
      await form.locator('.jp-mage-TriggerVariables textarea').fill(variables);
    }
    await form.locator('button[type="submit"]').click();
    const trigger = this.trigger(name);
    await expect(trigger.locator('.jp-mage-CurlPath pre')).toBeVisible();
    return trigger;
  }

  /** A trigger of the open pipeline. */
  trigger(name: string): Locator {
    return this.panel.locator(`.jp-mage-Trigger[data-trigger-name="${name}"]`);
  }

  /** A run row of the open pipeline. */
  runRow(id: number): Locator {
    return this.panel.locator(`.jp-mage-RunRow[data-run-id="${id}"]`);
  }
}

/**
 * A pipeline whose middle block prints a line, then waits until the file named
 * by its `release_file` variable exists (60 s at most; 3 s without one), then
 * prints another: a test watches the DAG and the log while it runs, whatever
 * the machine's speed, and lets it go on when it has seen them.
 */
export const SLOW_NOTEBOOK = notebook([
  {
    tags: ['data_loader'],
    source:
      '@data_loader\n' +
      'def load_records(*args, **kwargs):\n' +
      "    return [{'n': i, 'square': i * i} for i in range(5)]\n"
  },
  {
    tags: ['transformer'],
    source:
      'import os\n' +
      'import time\n\n' +
      '@transformer\n' +
      'def slow_step(rows, *args, **kwargs):\n' +
      "    print('tick 1', flush=True)\n" +
      "    release = kwargs.get('release_file')\n" +
      '    deadline = time.monotonic() + (60 if release else 3)\n' +
      '    while time.monotonic() < deadline:\n' +
      '        if release and os.path.exists(release):\n' +
      '            break\n' +
      '        time.sleep(0.1)\n' +
      "    print('tick 2', flush=True)\n" +
      '    return rows\n'
  },
  {
    tags: ['data_exporter'],
    source:
      '@data_exporter\n' +
      'def save(rows, *args, **kwargs):\n' +
      "    print('saved', len(rows), 'rows')\n"
  }
]);

/** The server's REST API, called as a script would (the UI-test servers have no token). */
export class MageREST {
  constructor(
    readonly page: Page,
    readonly baseURL: string
  ) {}

  async call<T = any>(
    method: 'GET' | 'POST' | 'PUT' | 'DELETE',
    path: string,
    data?: unknown
  ): Promise<{ status: number; body: T }> {
    const response = await this.page.request.fetch(`${this.baseURL}/${path}`, {
      method,
      data: data === undefined ? undefined : JSON.stringify(data),
      headers: { 'Content-Type': 'application/json' },
      failOnStatusCode: false
    });
    const text = await response.text();
    return { status: response.status(), body: text ? JSON.parse(text) : null };
  }

  /** Create an API trigger on a pipeline; returns it (with its token). */
  async createTrigger(
    uuid: string,
    name: string,
    variables: Record<string, unknown> = {}
  ): Promise<any> {
    const answer = await this.call(
      'POST',
      `api/pipelines/${encodeURIComponent(uuid)}/pipeline_schedules`,
      { pipeline_schedule: { name, variables } }
    );
    expect(answer.status).toBe(200);
    return answer.body.pipeline_schedule;
  }

  /**
   * Start a run of a trigger; with `wait`, hold the answer until it ends.
   *
   * @returns the run's id
   */
  async startRun(triggerId: number, wait = 0): Promise<number> {
    const query = wait ? `?wait=${wait}` : '';
    const answer = await this.call(
      'POST',
      `api/pipeline_schedules/${triggerId}/pipeline_runs${query}`,
      {}
    );
    expect(answer.status).toBe(200);
    return answer.body.pipeline_run.id;
  }
}

/** Selectors and actions of the Pipelines workspace (main area). */
export class MageWorkspace {
  constructor(readonly page: Page) {}

  /** The workspace widget. */
  get panel(): Locator {
    return this.page.locator('#jupyter-mage-workspace');
  }

  /** A tab of the workspace (`runs` or `triggers`). */
  tab(name: 'runs' | 'triggers'): Locator {
    return this.panel.locator(`.jp-mage-WsTab-${name}`);
  }

  /** A row of the run table. */
  runRow(id: number): Locator {
    return this.panel.locator(`.jp-mage-WsRunRow[data-run-id="${id}"]`);
  }

  /** All rows of the run table. */
  get runRows(): Locator {
    return this.panel.locator('.jp-mage-WsRunRow');
  }

  /** A trigger row of the Triggers tab. */
  trigger(name: string): Locator {
    return this.panel.locator(
      `.jp-mage-WsTrigger[data-trigger-name="${name}"]`
    );
  }

  /** The open run's view. */
  runView(id: number): Locator {
    return this.panel.locator(`.jp-mage-WsRun[data-run-id="${id}"]`);
  }

  /** A block's box in the open run's DAG. */
  dagNode(uuid: string): Locator {
    return this.panel.locator(`.jp-mage-DagNode[data-block-uuid="${uuid}"]`);
  }

  /** The selected block's detail (log, output, error). */
  get blockDetail(): Locator {
    return this.panel.locator('.jp-mage-WsBlock');
  }

  /** Open a run from the table with the keyboard (focus the row, Enter). */
  async openRun(id: number): Promise<Locator> {
    const row = this.runRow(id);
    await row.focus();
    await this.page.keyboard.press('Enter');
    const view = this.runView(id);
    await expect(view).toBeVisible();
    return view;
  }
}

/**
 * The WCAG contrast ratio of an element's text colour against a background
 * colour, both read as rendered (any CSS colour syntax, `color-mix` included).
 *
 * @param text the element whose `color` (or SVG `fill`) is the text colour
 * @param background the element whose `background-color` (or SVG `fill`) is behind it
 */
export async function contrastRatio(
  text: Locator,
  background: Locator
): Promise<number> {
  const colour = async (
    target: Locator,
    properties: string[]
  ): Promise<string> =>
    target.evaluate((el, props) => {
      const style = getComputedStyle(el);
      for (const p of props) {
        const v = style.getPropertyValue(p);
        if (v && v !== 'none' && v !== 'rgba(0, 0, 0, 0)') {
          return v;
        }
      }
      return '';
    }, properties);
  const isSvg = async (target: Locator): Promise<boolean> =>
    target.evaluate(el => el instanceof SVGElement);
  const fg = await colour(text, (await isSvg(text)) ? ['fill'] : ['color']);
  const bg = await colour(
    background,
    (await isSvg(background)) ? ['fill'] : ['background-color']
  );
  return text.page().evaluate(
    ([fgColour, bgColour]) => {
      // Paint each colour on a canvas (the browser resolves any syntax, and
      // blends a translucent text colour over its background) and read it back.
      const canvas = document.createElement('canvas');
      canvas.width = canvas.height = 1;
      const ctx = canvas.getContext('2d') as CanvasRenderingContext2D;
      const paint = (colours: string[]): number[] => {
        ctx.clearRect(0, 0, 1, 1);
        for (const c of colours) {
          ctx.fillStyle = c;
          ctx.fillRect(0, 0, 1, 1);
        }
        return Array.from(ctx.getImageData(0, 0, 1, 1).data.slice(0, 3));
      };
      const luminance = (rgb: number[]): number => {
        const [r, g, b] = rgb.map(v => {
          const c = v / 255;
          return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
      };
      const back = luminance(paint([bgColour]));
      const front = luminance(paint([bgColour, fgColour]));
      const [hi, lo] = back > front ? [back, front] : [front, back];
      return (hi + 0.05) / (lo + 0.05);
    },
    [fg, bg]
  );
}
