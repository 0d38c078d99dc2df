/**
 * A server without the jupyter_mage server extension: the frontend explains it
 * once, and the sidebar says so instead of failing silently.
 */
import { expect, test } from '@playwright/test';

import { MageSidebar, screenshot } from './helpers';

test('a missing server extension is explained once', async ({ page }) => {
  await page.goto('/lab'); // the project's baseURL: the server without the extension
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog).toContainText('jupyter-mage server extension missing', {
    timeout: 60_000
  });
  await expect(dialog).toContainText(
    'jupyter server extension enable jupyter_mage'
  );
  await screenshot(page, 'server-extension-missing');
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  await expect(dialog).toHaveCount(0);

  const sidebar = new MageSidebar(page);
  await sidebar.open();
  await expect(sidebar.panel.locator('.jp-mage-ServerMissing')).toBeVisible();
  await sidebar.panel.locator('.jp-mage-Refresh').click();
  // Once: no second dialog, however often the sidebar refreshes.
  await page.waitForTimeout(3000);
  await expect(dialog).toHaveCount(0);
});
