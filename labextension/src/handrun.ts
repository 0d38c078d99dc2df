/**
 * Hand runs without a manual step: the kernel of a notebook that has blocks
 * gets the `jupyter_mage` IPython extension (`%load_ext jupyter_mage`), so
 * that a block cell runs by hand as inserted, Mage's guarded imports included.
 *
 * It is loaded when such a notebook's kernel is ready (opened, started,
 * restarted, changed) and when a cell becomes a block, by a silent request
 * that leaves no output and no history. Kernels of other languages are left
 * alone; a Python kernel whose environment lacks jupyter-mage is told once
 * how to install it.
 */
import { Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { TranslationBundle } from '@jupyterlab/translation';

import { isTypeTag } from './blocks';

/**
 * Loads the extension and reports, in a user expression, whether it could.
 * The extension manager's `load_extension` is idempotent and prints nothing.
 */
const LOAD_CODE = [
  'try:',
  "    get_ipython().extension_manager.load_extension('jupyter_mage')",
  "    _jupyter_mage_hand_runs = 'loaded'",
  'except ImportError:',
  "    _jupyter_mage_hand_runs = 'missing'"
].join('\n');

/** What loading the extension in a kernel gave. */
export type HandRunSupport = 'loaded' | 'missing' | 'not-python';

/** Kernels already told that jupyter-mage is missing (told once each). */
const toldMissing = new Set<string>();

/** Whether the notebook has at least one block cell (a block-type tag). */
export function hasBlocks(panel: NotebookPanel): boolean {
  const cells = panel.content.model?.cells;
  if (!cells) {
    return false;
  }
  for (let i = 0; i < cells.length; i++) {
    const tags = cells.get(i).getMetadata('tags');
    if (
      Array.isArray(tags) &&
      tags.some(t => typeof t === 'string' && isTypeTag(t))
    ) {
      return true;
    }
  }
  return false;
}

/**
 * Load the `jupyter_mage` IPython extension in the kernel (silently).
 */
export async function loadHandRuns(
  kernel: Kernel.IKernelConnection,
  trans: TranslationBundle
): Promise<HandRunSupport> {
  const info = await kernel.info;
  if (info.language_info.name !== 'python') {
    return 'not-python';
  }
  const future = kernel.requestExecute({
    code: LOAD_CODE,
    silent: true,
    store_history: false,
    user_expressions: { state: '_jupyter_mage_hand_runs' }
  });
  const reply = await future.done;
  const content = reply.content;
  let state: HandRunSupport = 'missing';
  if (content.status === 'ok') {
    const expression = content.user_expressions['state'] as
      { status: string; data?: { 'text/plain'?: string } } | undefined;
    if (expression?.data?.['text/plain'] === "'loaded'") {
      state = 'loaded';
    }
  }
  if (state === 'missing' && !toldMissing.has(kernel.id)) {
    toldMissing.add(kernel.id);
    Notification.warning(
      trans.__(
        'Blocks run by hand need jupyter-mage in the kernel\'s environment: run "%%pip install jupyter-mage" in a cell, then restart the kernel.'
      ),
      { autoClose: 10000 }
    );
  }
  return state;
}

/** Load hand-run support in the panel's kernel if the notebook has blocks. */
export async function loadHandRunsIfPipeline(
  panel: NotebookPanel,
  trans: TranslationBundle
): Promise<void> {
  const kernel = panel.sessionContext.session?.kernel;
  if (!kernel || !hasBlocks(panel)) {
    return;
  }
  try {
    await loadHandRuns(kernel, trans);
  } catch (error) {
    // A kernel that died or restarted meanwhile: its next "ready" tries again.
    console.debug('jupyter-mage: hand-run support not loaded', error);
  }
}

/**
 * Watch every notebook: when its kernel is ready (first start, restart, a
 * kernel change), load hand-run support, since a new kernel process has none.
 */
export function watchNotebooks(
  tracker: INotebookTracker,
  trans: TranslationBundle
): void {
  tracker.widgetAdded.connect((_, panel) => {
    let fresh = true;
    const context = panel.sessionContext;
    context.kernelChanged.connect(() => {
      fresh = true;
    });
    context.statusChanged.connect((_, status) => {
      if (
        status === 'starting' ||
        status === 'restarting' ||
        status === 'autorestarting'
      ) {
        fresh = true;
      } else if (status === 'idle' && fresh) {
        fresh = false;
        void loadHandRunsIfPipeline(panel, trans);
      }
    });
  });
}
