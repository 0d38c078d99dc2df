/**
 * JupyterLab's list of running kernels names the kernels jupyter-mage keeps for pipeline runs.
 */
import { expect, test } from '@jupyterlab/galata';

import { screenshot } from './helpers';

const POOL_KERNEL_NAME = 'Pipeline runs (jupyter-mage)';

// The real kernels and sessions lists: Galata would otherwise show only this test's own.
test.use({ kernels: null, sessions: null });

test('the warm pool kernel is named in the Kernels list', async ({ page }) => {
  await page.sidebar.openTab('jp-running-sessions');
  await page.sidebar.setWidth(420);
  const panel = page.locator('#jp-running-sessions');
  const kernels = panel.locator('.jp-RunningSessions-item.jp-mod-kernel');
  // The server keeps one warm kernel (MageApp.kernel_pool_size=1): where an unused kernel
  // says "No sessions connected", ours says what it is for.
  const ours = kernels.filter({ hasText: POOL_KERNEL_NAME });
  await expect(ours.first()).toBeVisible({ timeout: 60_000 });
  await expect(ours.first()).not.toContainText('No sessions connected');
  await screenshot(panel, 'running-kernels');
});
