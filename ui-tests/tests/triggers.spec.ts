/**
 * Trigger management in the sidebar, and server errors shown to the user.
 */
import { expect, test } from '@jupyterlab/galata';

import { ETL_NOTEBOOK, MageSidebar } from './helpers';

test.use({ autoGoto: false });

test('edit, disable, rotate and delete a trigger; errors are notified', async ({
  page,
  tmpPath
}) => {
  await page.contents.uploadContent(
    ETL_NOTEBOOK,
    'text',
    `${tmpPath}/etl.ipynb`
  );
  await page.goto(`tree/${tmpPath}`);
  const sidebar = new MageSidebar(page);
  await sidebar.open();
  await sidebar.openPipeline(`${tmpPath}/etl`);
  let trigger = await sidebar.createTrigger('to_manage');

  // Edit: rename, and the curl command follows the new variables.
  await trigger.locator('.jp-mage-EditTrigger').click();
  const form = trigger.locator('.jp-mage-TriggerForm');
  await form.locator('.jp-mage-TriggerName input').fill('managed');
  await form
    .locator('.jp-mage-TriggerVariables textarea')
    .fill('{"env": "dev"}');
  await form.locator('button[type="submit"]').click();
  trigger = sidebar.trigger('managed');
  await expect(trigger.locator('.jp-mage-CurlPath pre')).toContainText('"dev"');

  // Rotate the token (with confirmation): the endpoint changes.
  const before = await trigger.locator('.jp-mage-EndpointUrl pre').innerText();
  await trigger.locator('.jp-mage-RotateToken').click();
  await page.locator('.jp-Dialog .jp-Dialog-button.jp-mod-warn').click();
  await expect(trigger.locator('.jp-mage-EndpointUrl pre')).not.toHaveText(
    before
  );

  // Disable; "Run now" is then refused by the server, and the user is told.
  await trigger.locator('.jp-mage-ToggleTrigger').click();
  await expect(
    trigger.locator('.jp-mage-TriggerHeader .jp-mage-Status')
  ).toHaveText('inactive');
  await trigger.locator('.jp-mage-RunNow').click();
  await trigger.locator('.jp-mage-StartRun').click();
  await expect(
    page.locator('.Toastify__toast').filter({ hasText: 'inactive' })
  ).toBeVisible();

  // Delete, after confirming.
  await trigger.locator('.jp-mage-DeleteTrigger').click();
  await expect(page.locator('.jp-Dialog')).toContainText('Delete trigger');
  await page.locator('.jp-Dialog .jp-Dialog-button.jp-mod-warn').click();
  await expect(trigger).toHaveCount(0);
});
