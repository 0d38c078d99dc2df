/**
 * The Pipelines sidebar against a real server with the jupyter_mage extension.
 */
import { expect, test } from '@jupyterlab/galata';

import {
  ETL_NOTEBOOK,
  FAILING_NOTEBOOK,
  MageSidebar,
  runInShell,
  screenshot
} from './helpers';

test.use({ autoGoto: false });

test.describe('Pipelines sidebar', () => {
  // Errors the extension logs in the browser console fail the test.
  let consoleErrors: string[] = [];

  test.beforeEach(async ({ page, tmpPath }) => {
    consoleErrors = [];
    page.on('console', msg => {
      if (msg.type() === 'error' && msg.text().includes('jupyter-mage')) {
        consoleErrors.push(msg.text());
      }
    });
    await page.contents.uploadContent(
      ETL_NOTEBOOK,
      'text',
      `${tmpPath}/etl.ipynb`
    );
    await page.contents.uploadContent(
      FAILING_NOTEBOOK,
      'text',
      `${tmpPath}/failing.ipynb`
    );
    await page.goto(`tree/${tmpPath}`);
  });

  test.afterEach(() => {
    expect(consoleErrors).toEqual([]);
  });

  test('opens from its icon and lists pipelines with their blocks', async ({
    page,
    tmpPath
  }) => {
    const sidebar = new MageSidebar(page);
    await sidebar.open();
    const item = sidebar.pipelineItem(`${tmpPath}/etl`);
    await expect(item).toBeVisible();
    // Blocks in dependency order.
    await expect(item.locator('.jp-mage-Block .jp-mage-BlockName')).toHaveText([
      'load_numbers',
      'total',
      'export'
    ]);
    await screenshot(sidebar.panel, 'sidebar');

    // Opening a pipeline opens its notebook.
    await item.locator('.jp-mage-OpenNotebook').click();
    await expect(page.locator('.jp-NotebookPanel .jp-Notebook')).toBeVisible();
    expect(await page.activity.isTabActive('etl.ipynb')).toBe(true);
  });

  test('create an API trigger, run its curl command, watch the run complete', async ({
    page,
    tmpPath
  }) => {
    const uuid = `${tmpPath}/etl`;
    const sidebar = new MageSidebar(page);
    await sidebar.open();
    await sidebar.openPipeline(uuid);

    const trigger = await sidebar.createTrigger(
      'ui_webhook',
      // A quote in a value: the command must still be valid shell.
      '{\n  "env": "staging",\n  "count": 5,\n  "note": "it\'s live"\n}'
    );
    const endpoint = await trigger
      .locator('.jp-mage-EndpointUrl pre')
      .innerText();
    const port = (process.env.MAGE_UI_PORTS ?? '').split(',')[0];
    expect(endpoint).toMatch(
      new RegExp(
        `^http://localhost:${port}/api/pipeline_schedules/\\d+/pipeline_runs/\\S+$`
      )
    );
    const curl = await trigger.locator('.jp-mage-CurlPath pre').innerText();
    expect(curl).toContain('"staging"');
    await expect(trigger.locator('.jp-mage-CurlBearer pre')).toContainText(
      'Authorization: Bearer'
    );
    await trigger.locator('.jp-mage-CurlBearer').scrollIntoViewIfNeeded();
    await screenshot(sidebar.panel, 'trigger-curl');

    // Run the command read from the page, as a shell would.
    const answer = JSON.parse(
      runInShell(`${curl} --silent --show-error --fail`)
    );
    const runId: number = answer.pipeline_run.id;
    expect(answer.pipeline_run.status).toBe('initial');

    // The run appears and completes in the sidebar without a reload.
    const row = sidebar.runRow(runId);
    await expect(row).toBeVisible();
    await expect(row).toHaveAttribute('data-status', 'completed', {
      timeout: 60_000
    });
    await row.scrollIntoViewIfNeeded();
    await screenshot(sidebar.panel, 'run-completed');

    // Its detail shows each block run, with the exporter's log.
    await row.click();
    const view = sidebar.panel.locator(
      `.jp-mage-RunView[data-run-id="${runId}"]`
    );
    await expect(view.locator('.jp-mage-BlockRun')).toHaveCount(3);
    await expect(view.locator('.jp-mage-Facts')).toContainText(
      '"note":"it\'s live"'
    );
    const exporter = view.locator(
      '.jp-mage-BlockRun[data-block-uuid="export"]'
    );
    await exporter.locator('.jp-mage-BlockRunHeader').click();
    await expect(exporter.locator('.jp-mage-Log')).toContainText(
      'total is 10 for env staging'
    );
  });

  test('a failed run shows the failing block and its traceback', async ({
    page,
    tmpPath
  }) => {
    const uuid = `${tmpPath}/failing`;
    const sidebar = new MageSidebar(page);
    await sidebar.open();
    await sidebar.openPipeline(uuid);
    const trigger = await sidebar.createTrigger('ui_failing');

    // "Run now" from the sidebar, with the variables form.
    await trigger.locator('.jp-mage-RunNow').click();
    await trigger.locator('.jp-mage-StartRun').click();

    const row = sidebar.panel.locator('.jp-mage-RunRow').first();
    await expect(row).toHaveAttribute('data-status', 'failed', {
      timeout: 60_000
    });
    await row.click();

    const failed = sidebar.panel.locator(
      '.jp-mage-BlockRun[data-block-uuid="check_rows"]'
    );
    await expect(failed).toHaveAttribute('data-status', 'failed');
    const traceback = failed.locator('.jp-mage-Traceback');
    await expect(traceback).toContainText('ValueError');
    await expect(traceback).toContainText('bad row count: 3');
    await expect(
      sidebar.panel.locator('.jp-mage-BlockRun[data-block-uuid="never_runs"]')
    ).toHaveAttribute('data-status', 'upstream_failed');
    await expect(sidebar.panel.locator('.jp-mage-RetryRun')).toBeVisible();
    await traceback.scrollIntoViewIfNeeded();
    await screenshot(sidebar.panel, 'failed-run');
  });

  test('the variables editor rejects invalid JSON in place', async ({
    page,
    tmpPath
  }) => {
    const sidebar = new MageSidebar(page);
    await sidebar.open();
    await sidebar.openPipeline(`${tmpPath}/etl`);
    const editor = sidebar.panel.locator('.jp-mage-Variables');
    await editor.locator('textarea').fill('{"count": 3,');
    await expect(editor.locator('.jp-mage-FieldError')).toBeVisible();
    await expect(editor.locator('.jp-mage-SaveVariables')).toBeDisabled();

    await editor.locator('textarea').fill('{"count": 3}');
    await expect(editor.locator('.jp-mage-FieldError')).toHaveCount(0);
    await editor.locator('.jp-mage-SaveVariables').click();
    await expect(editor.locator('.jp-mage-SaveVariables')).toBeDisabled();

    // The notebook's metadata now holds the variables.
    const content = await page.request.get(
      `/api/contents/${tmpPath}/etl.ipynb?content=1`
    );
    const model = await content.json();
    expect(model.content.metadata.mage.variables).toEqual({ count: 3 });
  });
});
