/**
 * The sidebar under a non-root base URL (`/jm/`): every request and every URL
 * it shows must carry the base URL.
 *
 * Plain Playwright rather than Galata's fixtures: Galata's contents helpers
 * call `/api/contents` at the server root, which does not exist here.
 */
import { expect, test } from '@playwright/test';

import { ETL_NOTEBOOK, MageSidebar, runInShell, screenshot } from './helpers';

// The port of the server playwright.config.js started under /jm/.
const BASE_PORT = (process.env.MAGE_UI_PORTS ?? '').split(',')[1];
const BASE = `http://localhost:${BASE_PORT}/jm/`;
const escapedBase = BASE.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

test('trigger and run under the base URL /jm/', async ({ page, request }) => {
  const dir = `base-url-${Date.now()}`;
  const put = async (path: string, body: object): Promise<void> => {
    const response = await request.put(`${BASE}api/contents/${path}`, {
      data: body
    });
    expect(response.ok()).toBe(true);
  };
  await put(dir, { type: 'directory' });
  await put(`${dir}/etl.ipynb`, {
    type: 'notebook',
    format: 'json',
    content: JSON.parse(ETL_NOTEBOOK)
  });

  await page.goto(`${BASE}lab/tree/${dir}`);
  await expect(page.locator('#jupyterlab-splash')).toHaveCount(0, {
    timeout: 60_000
  });

  const sidebar = new MageSidebar(page);
  await sidebar.open();
  await sidebar.openPipeline(`${dir}/etl`);
  const trigger = await sidebar.createTrigger('base_url_webhook');

  const endpoint = await trigger
    .locator('.jp-mage-EndpointUrl pre')
    .innerText();
  expect(endpoint).toMatch(
    new RegExp(`^${escapedBase}api/pipeline_schedules/\\d+/pipeline_runs/\\S+$`)
  );
  const bearer = await trigger.locator('.jp-mage-CurlBearer pre').innerText();
  expect(bearer).toContain(`'${BASE}api/pipeline_schedules/`);
  await screenshot(sidebar.panel, 'base-url-trigger');

  // The Bearer form this time, run as a shell would.
  const answer = JSON.parse(
    runInShell(`${bearer} --silent --show-error --fail`)
  );
  const row = sidebar.runRow(answer.pipeline_run.id);
  await expect(row).toHaveAttribute('data-status', 'completed', {
    timeout: 60_000
  });
  await row.scrollIntoViewIfNeeded();
  await screenshot(sidebar.panel, 'base-url-run-completed');

  // The run's executed notebook opens through the base URL too.
  await row.click();
  await sidebar.panel.locator('.jp-mage-OpenExecuted').click();
  await expect(page.locator('.jp-NotebookPanel .jp-Notebook')).toBeVisible();
});
