/**
 * Block tools in the notebook: make a cell a block, set its name and upstream.
 */
import { expect, test } from '@jupyterlab/galata';

import { MageSidebar, notebook, screenshot } from './helpers';

test.use({ autoGoto: false });

/** The tags and source of the active cell. */
async function activeCell(
  page: import('@jupyterlab/galata').IJupyterLabPageFixture
): Promise<{ tags: string[]; source: string }> {
  return page.evaluate(() => {
    const app = (window as any).jupyterapp;
    const cell = app.shell.currentWidget.content.activeCell;
    return {
      tags: cell.model.getMetadata('tags') ?? [],
      source: cell.model.sharedModel.getSource()
    };
  });
}

test('make a cell a block through the command palette', async ({
  page,
  tmpPath
}) => {
  await page.contents.uploadContent(
    notebook([{ source: '' }, { source: '' }]),
    'text',
    `${tmpPath}/blocks.ipynb`
  );
  await page.goto(`tree/${tmpPath}`);
  await page.notebook.openByPath(`${tmpPath}/blocks.ipynb`);
  await page.notebook.activate('blocks.ipynb');
  await page.notebook.selectCells(0);

  // From the command palette.
  await page.keyboard.press('Control+Shift+C');
  await page
    .locator('#command-palette .lm-CommandPalette-input')
    .fill('Make Cell a Mage Block');
  await page.keyboard.press('Enter');
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog.locator('.jp-mage-BlockTypeSelect')).toBeVisible();
  await dialog.locator('.jp-mage-BlockTypeSelect').selectOption('data_loader');
  await expect(dialog.locator('.jp-mage-InsertTemplate')).toBeChecked();
  await screenshot(page, 'make-block-dialog');
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  await expect(dialog).toHaveCount(0);

  let cell = await activeCell(page);
  expect(cell.tags).toEqual(['data_loader']);
  expect(cell.source).toContain("if 'data_loader' not in globals():");
  expect(cell.source).toContain(
    '@data_loader\ndef load_data(*args, **kwargs):'
  );

  // The second cell: a transformer, named, reading from the loader.
  await page.notebook.selectCells(1);
  // (Not awaited in the page: the command resolves only once the dialog closes.)
  await page.evaluate(() => {
    void (window as any).jupyterapp.commands.execute('jupyter-mage:make-block');
  });
  await dialog.locator('.jp-mage-BlockTypeSelect').selectOption('transformer');
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  await expect(dialog).toHaveCount(0);

  // Name and upstream from the cell toolbar.
  await page
    .locator(
      '.jp-Notebook .jp-Cell.jp-mod-active .jp-cell-toolbar [data-command="jupyter-mage:set-block-links"] button'
    )
    .click();
  await dialog.locator('.jp-mage-BlockNameInput').fill('clean_rows');
  await dialog
    .locator('.jp-mage-UpstreamList input[value="load_data"]')
    .check();
  await screenshot(page, 'block-links-dialog');
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  await expect(dialog).toHaveCount(0);

  cell = await activeCell(page);
  expect(cell.tags).toEqual([
    'transformer',
    'name:clean_rows',
    'upstream:load_data'
  ]);

  // Once saved, the sidebar shows the new pipeline with both blocks.
  await page.notebook.save();
  const sidebar = new MageSidebar(page);
  await sidebar.open();
  const item = sidebar.pipelineItem(`${tmpPath}/blocks`);
  await expect(item.locator('.jp-mage-BlockName')).toHaveText([
    'load_data',
    'clean_rows'
  ]);
  await screenshot(page, 'make-block');
});

test('a block template runs by hand as inserted, with no manual step', async ({
  page,
  tmpPath
}) => {
  await page.contents.uploadContent(
    notebook([{ source: '' }]),
    'text',
    `${tmpPath}/by_hand.ipynb`
  );
  await page.goto(`tree/${tmpPath}`);
  await page.notebook.openByPath(`${tmpPath}/by_hand.ipynb`);
  await page.notebook.activate('by_hand.ipynb');
  await page.notebook.selectCells(0);
  await page.evaluate(() => {
    void (window as any).jupyterapp.commands.execute('jupyter-mage:make-block');
  });
  const dialog = page.locator('.jp-Dialog');
  await dialog.locator('.jp-mage-BlockTypeSelect').selectOption('data_loader');
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  await expect(dialog).toHaveCount(0);
  // Saved, so that the kernel's hand run finds the block in the file.
  await page.notebook.save();
  await page.notebook.runCell(0);
  const output = page
    .locator('.jp-Notebook .jp-Cell')
    .first()
    .locator('.jp-OutputArea');
  // Mage's guarded import ran (the decorators were there) and the block ran: its summary.
  await expect(output).toContainText('load_data', { timeout: 60_000 });
  await expect(output).not.toContainText('Error');
  await screenshot(page, 'hand-run-template');
});
