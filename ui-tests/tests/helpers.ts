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
