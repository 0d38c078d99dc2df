/**
 * The Pipelines workspace (main area) against a real server: its entry points,
 * the run table's filters and paging, a run's DAG live, a running block's log,
 * an output table, triggers whose notebook is gone, and the dark theme.
 */
import { expect, test } from '@jupyterlab/galata';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import {
  contrastRatio,
  ETL_NOTEBOOK,
  FAILING_NOTEBOOK,
  MageREST,
  MageSidebar,
  MageWorkspace,
  screenshot,
  SLOW_NOTEBOOK
} from './helpers';

test.use({ autoGoto: false });

test.describe('Pipelines workspace', () => {
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
  });

  test.afterEach(() => {
    expect(consoleErrors).toEqual([]);
  });

  test('opens from the sidebar, the launcher and the command palette', async ({
    page,
    tmpPath
  }) => {
    await page.goto(`tree/${tmpPath}`);
    const ws = new MageWorkspace(page);
    const closeWorkspace = (): Promise<void> =>
      page
        .locator(
          '#jp-main-dock-panel .lm-TabBar-tab:has-text("Pipelines") .lm-TabBar-tabCloseIcon'
        )
        .click();

    // From the sidebar's button.
    const sidebar = new MageSidebar(page);
    await sidebar.open();
    await sidebar.panel.locator('.jp-mage-OpenWorkspace').click();
    await expect(ws.panel).toBeVisible();
    expect(await page.activity.isTabActive('Pipelines')).toBe(true);
    await expect(ws.tab('runs')).toHaveAttribute('aria-selected', 'true');
    await closeWorkspace();
    await expect(ws.panel).toHaveCount(0);

    // From the launcher's card, with the keyboard.
    await page.menu.clickMenuItem('File>New Launcher');
    // (Closing the last main-area tab may have opened a launcher already:
    // use the one shown.)
    const card = page
      .locator('.jp-Launcher:visible .jp-LauncherCard')
      .filter({ hasText: /^Pipelines$/ });
    await card.focus();
    await page.keyboard.press('Enter');
    await expect(ws.panel).toBeVisible();
    await closeWorkspace();
    await expect(ws.panel).toHaveCount(0);

    // From the command palette.
    await page.keyboard.press('Control+Shift+C');
    await page
      .locator('.lm-CommandPalette-input')
      .fill('Open Pipelines Workspace');
    await page.keyboard.press('Enter');
    await expect(ws.panel).toBeVisible();

    // The tabs move with the arrow keys.
    await ws.tab('runs').focus();
    await page.keyboard.press('ArrowRight');
    await expect(ws.tab('triggers')).toHaveAttribute('aria-selected', 'true');
    await expect(ws.tab('triggers')).toBeFocused();
  });

  test('the file browser creates an API trigger; a trigger whose notebook is gone can be deleted', async ({
    page,
    tmpPath,
    baseURL
  }) => {
    const rest = new MageREST(page, baseURL as string);
    await page.goto(`tree/${tmpPath}`);
    await page.contents.uploadContent(
      FAILING_NOTEBOOK,
      'text',
      `${tmpPath}/doomed.ipynb`
    );
    const doomed = await rest.createTrigger(`${tmpPath}/doomed`, 'doomed_hook');

    // "Create API trigger…" on a notebook of the file browser.
    await page
      .locator('.jp-DirListing-item', { hasText: 'etl.ipynb' })
      .click({ button: 'right' });
    await page.getByRole('menuitem', { name: 'Create API trigger…' }).click();
    const dialog = page.locator('.jp-Dialog');
    await dialog.locator('input').fill('from_browser');
    await page.keyboard.press('Enter');

    const ws = new MageWorkspace(page);
    await expect(ws.tab('triggers')).toHaveAttribute('aria-selected', 'true');
    const created = ws.trigger('from_browser');
    await expect(created).toHaveClass(/jp-mod-highlighted/);
    await expect(created).toBeFocused();
    await expect(created).toContainText(`${tmpPath}/etl`);
    await expect(created.locator('.jp-mage-TriggerRuns')).toHaveText('0');
    const triggers = (await rest.call('GET', 'api/pipeline_schedules')).body
      .pipeline_schedules;
    const fromBrowser = triggers.find((t: any) => t.name === 'from_browser');
    expect(fromBrowser.pipeline_uuid).toBe(`${tmpPath}/etl`);

    // A refused call (wrong token): shown when the server reports refusals.
    const refused = await rest.call(
      'POST',
      `api/pipeline_schedules/${fromBrowser.id}/pipeline_runs/not-the-token`,
      {}
    );
    expect(refused.status).toBe(403);
    const after = (
      await rest.call('GET', `api/pipeline_schedules/${fromBrowser.id}`)
    ).body.pipeline_schedule;
    await ws.tab('runs').click();
    await ws.tab('triggers').click();
    const refusals = created.locator('.jp-mage-TriggerRefusals');
    if (Array.isArray(after.recent_refusals)) {
      await expect(refusals).toContainText('1 refused call');
      await refusals.locator('summary').click();
      await expect(refusals.locator('.jp-mage-Refusal')).toHaveCount(1);
      await expect(refusals).toContainText('403');
      await expect(refusals).not.toContainText(fromBrowser.token);
    } else {
      await expect(refusals).toHaveText('—');
    }

    // The notebook goes away: its trigger is listed as gone, first.
    await page.contents.deleteFile(`${tmpPath}/doomed.ipynb`);
    await ws.tab('runs').click();
    await ws.tab('triggers').click();
    const gone = ws.trigger('doomed_hook');
    await expect(gone).toHaveAttribute('data-orphan', 'true');
    await expect(gone.locator('.jp-mage-Gone')).toHaveText('notebook gone');
    await expect(ws.panel.locator('.jp-mage-OrphanHint')).toBeVisible();
    await expect(created).toHaveAttribute('data-orphan', 'false');
    await screenshot(ws.panel, 'workspace-triggers');

    // Deleted with the keyboard: focus Delete, Enter, Enter in the dialog.
    await gone.locator('.jp-mage-DeleteTrigger').focus();
    await page.keyboard.press('Enter');
    await expect(dialog).toContainText('doomed_hook');
    await page.keyboard.press('Enter');
    await expect(gone).toHaveCount(0);
    expect(
      (await rest.call('GET', `api/pipeline_schedules/${doomed.id}`)).status
    ).toBe(404);
  });

  test('runs of all pipelines: filters by status, pipeline and trigger, and paging', async ({
    page,
    tmpPath,
    baseURL
  }) => {
    const rest = new MageREST(page, baseURL as string);
    await page.contents.uploadContent(
      FAILING_NOTEBOOK,
      'text',
      `${tmpPath}/failing.ipynb`
    );
    const etl = `${tmpPath}/etl`;
    const failing = `${tmpPath}/failing`;
    const etlA = await rest.createTrigger(etl, 'etl_a');
    const etlB = await rest.createTrigger(etl, 'etl_b');
    const bad = await rest.createTrigger(failing, 'bad_hook');
    // 11 runs: 7 + 2 of the ETL pipeline by two triggers, 2 failing.
    const ids: number[] = [];
    for (let i = 0; i < 7; i++) {
      ids.push(await rest.startRun(etlA.id));
    }
    ids.push(await rest.startRun(etlB.id), await rest.startRun(etlB.id));
    const failed = [await rest.startRun(bad.id), await rest.startRun(bad.id)];
    // Wait for the last ones, so statuses are final.
    for (const id of [...ids.slice(-2), ...failed]) {
      await expect
        .poll(
          async () =>
            (await rest.call('GET', `api/pipeline_runs/${id}`)).body
              .pipeline_run.status,
          { timeout: 60_000 }
        )
        .toMatch(/completed|failed/);
    }
    await page.goto(`tree/${tmpPath}`);
    await page.evaluate(() =>
      window.jupyterapp.commands.execute('jupyter-mage:open-workspace', {
        tab: 'runs'
      })
    );
    const ws = new MageWorkspace(page);
    // Only this test's pipelines (the server is shared by the test files).
    await ws.panel.locator('.jp-mage-FilterPipeline').selectOption(failing);
    await expect(ws.runRows).toHaveCount(2);
    for (const id of failed) {
      await expect(ws.runRow(id)).toHaveAttribute('data-status', 'failed');
    }

    await ws.panel.locator('.jp-mage-FilterPipeline').selectOption(etl);
    await expect(ws.runRows).toHaveCount(9);
    await expect(ws.panel.locator('.jp-mage-WsPageInfo')).toHaveText(
      '1–9 of 9'
    );
    // Status: no failed run in this pipeline.
    await ws.panel.locator('.jp-mage-FilterStatus').selectOption('failed');
    await expect(ws.panel.locator('.jp-mage-NoRuns')).toBeVisible();
    await ws.panel.locator('.jp-mage-FilterStatus').selectOption('completed');
    await expect(ws.runRows).toHaveCount(9);

    // Trigger: the trigger list follows the pipeline filter.
    const triggerSelect = ws.panel.locator('.jp-mage-FilterTrigger');
    await expect(triggerSelect.locator('option')).toHaveText([
      'All triggers',
      `etl_a (#${etlA.id})`,
      `etl_b (#${etlB.id})`
    ]);
    await triggerSelect.selectOption(String(etlB.id));
    await expect(ws.runRows).toHaveCount(2);
    await expect(ws.runRows.first()).toContainText('etl_b');
    await screenshot(ws.panel, 'workspace-runs-filtered');

    // Paging: 10 per page, newest first.
    await triggerSelect.selectOption('');
    await ws.panel.locator('.jp-mage-FilterStatus').selectOption('');
    await ws.panel.locator('.jp-mage-PageSize').selectOption('10');
    await ws.panel.locator('.jp-mage-FilterPipeline').selectOption('');
    await expect(ws.runRows).toHaveCount(10);
    const newest = ws.runRows.first();
    await expect(newest).toHaveAttribute('data-run-id', String(failed[1]));
    await expect(ws.panel.locator('.jp-mage-PrevPage')).toBeDisabled();
    const info = await ws.panel.locator('.jp-mage-WsPageInfo').innerText();
    const total = Number(info.split(' of ')[1]);
    expect(total).toBeGreaterThanOrEqual(11);
    await ws.panel.locator('.jp-mage-NextPage').click();
    await expect(ws.panel.locator('.jp-mage-WsPageInfo')).toHaveText(
      `11–${Math.min(20, total)} of ${total}`
    );
    // The oldest of this test's runs is on the second page.
    await expect(ws.runRow(ids[0])).toBeVisible();
    await ws.panel.locator('.jp-mage-PrevPage').click();
    await expect(ws.runRow(failed[1])).toBeVisible();
  });

  test("a run's DAG changes live, a running block's log streams, outputs are tables", async ({
    page,
    tmpPath,
    baseURL
  }) => {
    const rest = new MageREST(page, baseURL as string);
    await page.contents.uploadContent(
      SLOW_NOTEBOOK,
      'text',
      `${tmpPath}/slow.ipynb`
    );
    const uuid = `${tmpPath}/slow`;
    // The slow block waits for this file: the test creates it once it has
    // seen the block running and its first log line.
    const release = path.join(
      os.tmpdir(),
      `jupyter-mage-ui-release-${process.pid}-${Date.now()}`
    );
    const trigger = await rest.createTrigger(uuid, 'slow_hook', {
      release_file: release
    });
    await page.goto(`tree/${tmpPath}`);
    // The notebook toolbar's button opens the workspace on its pipeline.
    await page.filebrowser.open(`${tmpPath}/slow.ipynb`);
    await page
      .locator('.jp-NotebookPanel-toolbar .jp-mage-NotebookWorkspaceButton')
      .click();
    const ws = new MageWorkspace(page);
    await expect(ws.panel.locator('.jp-mage-FilterPipeline')).toHaveValue(uuid);

    const runId = await rest.startRun(trigger.id);
    await expect(ws.runRow(runId)).toBeVisible();
    const view = await ws.openRun(runId);

    // The picture: three boxes, two edges, coloured by live status.
    await expect(view.locator('.jp-mage-DagNode')).toHaveCount(3);
    await expect(view.locator('.jp-mage-DagEdge')).toHaveCount(2);
    await expect(
      view.locator('.jp-mage-DagEdge[data-from="load_records"]')
    ).toHaveAttribute('data-to', 'slow_step');
    // Statuses and the selected block's log read at one instant, so what is
    // compared was on the screen together.
    const snapshot = (): Promise<{
      status: Record<string, string>;
      log: string;
    }> =>
      view.evaluate(el => ({
        status: Object.fromEntries(
          Array.from(el.querySelectorAll<SVGElement>('.jp-mage-DagNode')).map(
            n => [n.dataset.blockUuid as string, n.dataset.status as string]
          )
        ),
        log:
          el.querySelector('.jp-mage-WsBlock .jp-mage-Log')?.textContent ?? ''
      }));
    await expect
      .poll(async () => (await snapshot()).status['slow_step'], {
        timeout: 60_000,
        intervals: [100]
      })
      .toBe('running');
    const whileRunning = await snapshot();
    expect(whileRunning.status['load_records']).toBe('completed');
    expect(whileRunning.status['save']).not.toBe('completed');

    // The running block's log, by keyboard: its first line while it runs.
    const slow = ws.dagNode('slow_step');
    await slow.focus();
    await page.keyboard.press('Enter');
    await expect(ws.blockDetail).toHaveAttribute(
      'data-block-uuid',
      'slow_step'
    );
    await expect
      .poll(async () => (await snapshot()).log, {
        timeout: 40_000,
        intervals: [200]
      })
      .toContain('tick 1');
    const logged = await snapshot();
    expect(logged.status['slow_step']).toBe('running');
    expect(logged.log).not.toContain('saved');
    await screenshot(ws.panel, 'workspace-run-live');
    fs.writeFileSync(release, '');

    // Then the rest, without a reload.
    await expect(ws.blockDetail.locator('.jp-mage-Log')).toContainText(
      'tick 2',
      { timeout: 30_000 }
    );
    await expect(ws.dagNode('save')).toHaveAttribute(
      'data-status',
      'completed',
      { timeout: 30_000 }
    );
    await expect(slow).toHaveAttribute('data-status', 'completed');
    await expect(view).toHaveAttribute('data-status', 'completed');
    await expect(view.locator('.jp-mage-WsRunHeader')).toContainText(
      'completed'
    );

    // The loader's output: a list of records as a table.
    await ws.dagNode('load_records').click();
    const table = ws.blockDetail.locator('.jp-mage-OutputTable');
    await expect(table.locator('th')).toHaveText(['n', 'square']);
    await expect(table.locator('tbody tr')).toHaveCount(5);
    await expect(table.locator('tbody tr').nth(3).locator('td')).toHaveText([
      '3',
      '9'
    ]);
    await expect(ws.blockDetail.locator('.jp-mage-OutputHeader')).toContainText(
      '5 items'
    );
    await screenshot(ws.panel, 'workspace-output-table');

    // Back to the table, which shows the run completed.
    await view.locator('.jp-mage-Back').click();
    await expect(ws.runRow(runId)).toHaveAttribute('data-status', 'completed');
    fs.rmSync(release, { force: true });
  });

  test('dark theme: chips, tables and the DAG stay readable', async ({
    page,
    tmpPath,
    baseURL
  }) => {
    const rest = new MageREST(page, baseURL as string);
    const uuid = `${tmpPath}/etl`;
    const trigger = await rest.createTrigger(uuid, 'dark_hook');
    const runId = await rest.startRun(trigger.id, 60);
    await page.goto(`tree/${tmpPath}`);
    await page.theme.setDarkTheme();
    try {
      // The sidebar's block-type chips.
      const sidebar = new MageSidebar(page);
      await sidebar.open();
      const chip = sidebar
        .pipelineItem(uuid)
        .locator('.jp-mage-BlockType-data_loader');
      await expect(chip).toBeVisible();
      expect(await contrastRatio(chip, chip)).toBeGreaterThanOrEqual(4.5);
      for (const type of ['transformer', 'data_exporter']) {
        const other = sidebar
          .pipelineItem(uuid)
          .locator(`.jp-mage-BlockType-${type}`);
        expect(await contrastRatio(other, other)).toBeGreaterThanOrEqual(4.5);
      }

      // The workspace's run: DAG boxes and an output table.
      await page.evaluate(
        id =>
          window.jupyterapp.commands.execute('jupyter-mage:open-workspace', {
            run_id: id
          }),
        runId
      );
      const ws = new MageWorkspace(page);
      const view = ws.runView(runId);
      await expect(view).toHaveAttribute('data-status', 'completed');
      const node = ws.dagNode('load_numbers');
      await expect(node).toHaveAttribute('data-status', 'completed');
      expect(
        await contrastRatio(
          node.locator('.jp-mage-DagNodeName'),
          node.locator('.jp-mage-DagNodeBox')
        )
      ).toBeGreaterThanOrEqual(4.5);
      expect(
        await contrastRatio(
          node.locator('.jp-mage-DagNodeStatus'),
          node.locator('.jp-mage-DagNodeBox')
        )
      ).toBeGreaterThanOrEqual(4.5);
      await node.click();
      const header = ws.blockDetail.locator('.jp-mage-OutputTable th').first();
      await expect(header).toHaveText('n');
      expect(await contrastRatio(header, header)).toBeGreaterThanOrEqual(4.5);
      const badge = view.locator('.jp-mage-WsRunHeader .jp-mage-Status');
      expect(await contrastRatio(badge, badge)).toBeGreaterThanOrEqual(3);
      // The workspace's own background is the theme's dark one.
      const bg = await ws.panel
        .locator('.jp-mage-Workspace')
        .evaluate(el => getComputedStyle(el).backgroundColor);
      expect(bg).toBe('rgb(33, 33, 33)');
      await screenshot(page, 'workspace-dark');
    } finally {
      await page.theme.setLightTheme();
    }
  });
});
