/**
 * The plugin of the Pipelines workspace: its command (palette, launcher card,
 * sidebar button, notebook toolbar button), the file browser's "Create API
 * trigger…" on notebooks.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  InputDialog,
  MainAreaWidget,
  WidgetTracker
} from '@jupyterlab/apputils';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { NotebookPanel } from '@jupyterlab/notebook';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { ToolbarButton } from '@jupyterlab/ui-components';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import type { MageAPI } from '../api';
import { mageIcon } from '../icons';
import type { IWorkspaceRequest, WorkspaceTab } from './model';
import type { WorkspaceView } from './widget';

/** Command ids of the workspace. */
export namespace WorkspaceCommandIDs {
  export const open = 'jupyter-mage:open-workspace';
  export const createTrigger = 'jupyter-mage:create-api-trigger';
}

/** The pipeline uuid of a notebook path (root-relative, without `.ipynb`). */
export function pipelineUuidOf(path: string): string {
  return path.replace(/\.ipynb$/i, '');
}

/** The workspace request that command arguments describe. */
function requestOf(args: ReadonlyPartialJSONObject): IWorkspaceRequest {
  const request: IWorkspaceRequest = {};
  if (args.tab === 'runs' || args.tab === 'triggers') {
    request.tab = args.tab as WorkspaceTab;
  }
  if (typeof args.pipeline_uuid === 'string') {
    request.pipelineUuid = args.pipeline_uuid;
  }
  if (typeof args.trigger_id === 'number') {
    request.triggerId = args.trigger_id;
  }
  if (typeof args.run_id === 'number') {
    request.runId = args.run_id;
  }
  return request;
}

/**
 * The Pipelines workspace in the main area.
 */
export const workspacePlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-mage:workspace',
  description:
    'The Pipelines workspace: runs of all pipelines, DAGs, triggers, in the main area.',
  autoStart: true,
  // No layout restoration: the workspace opens on demand (a restored one
  // held up the application's start in the UI tests on a loaded machine).
  optional: [ICommandPalette, ILauncher, IFileBrowserFactory, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    browserFactory: IFileBrowserFactory | null,
    translator: ITranslator | null
  ): void => {
    const trans = (translator ?? nullTranslator).load('jupyter_mage');
    // The workspace's code (and the DAG layout library) loads when the
    // workspace is first opened, not with the application.
    let api: MageAPI | null = null;
    const getApi = async (): Promise<MageAPI> => {
      if (api === null) {
        const { MageAPI } = await import('../api');
        api = new MageAPI(app.serviceManager.serverSettings);
      }
      return api;
    };
    const report = async (action: string, err: unknown): Promise<void> => {
      const { reportError } = await import('../model');
      reportError(trans, action, err);
    };
    const tracker = new WidgetTracker<MainAreaWidget<WorkspaceView>>({
      namespace: 'jupyter-mage-workspace'
    });
    let widget: MainAreaWidget<WorkspaceView> | null = null;

    const openPath = (path: string): void => {
      void app.commands
        .execute('docmanager:open', { path })
        .catch(err => report(trans.__('Opening %1', path), err));
    };
    const openSidebar = (): void => {
      void app.commands.execute('jupyter-mage:open-sidebar');
    };

    // One workspace: a second open while the first is being made waits for it.
    let making: Promise<MainAreaWidget<WorkspaceView>> | null = null;
    const make = async (): Promise<MainAreaWidget<WorkspaceView>> => {
      const [{ WorkspaceModel }, { createWorkspace }] = await Promise.all([
        import('./model'),
        import('./widget')
      ]);
      const model = new WorkspaceModel(await getApi(), trans);
      const made = createWorkspace(model, trans, openPath, openSidebar);
      void tracker.add(made);
      return made;
    };

    const open = async (request: IWorkspaceRequest): Promise<void> => {
      if (widget === null || widget.isDisposed) {
        making = making ?? make();
        try {
          widget = await making;
        } finally {
          making = null;
        }
      }
      if (!widget.isAttached) {
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(widget.id);
      await widget.content.model.show(request);
    };

    app.commands.addCommand(WorkspaceCommandIDs.open, {
      label: args =>
        args.isLauncher
          ? trans.__('Pipelines')
          : trans.__('Open Pipelines Workspace'),
      caption: trans.__('Runs of all pipelines, their DAGs, and all triggers'),
      icon: args => (args.isPalette ? undefined : mageIcon),
      describedBy: {
        args: {
          type: 'object',
          properties: {
            tab: { type: 'string', enum: ['runs', 'triggers'] },
            pipeline_uuid: {
              type: 'string',
              description: 'Show the runs of this pipeline'
            },
            trigger_id: {
              type: 'number',
              description: 'Bring this trigger forward'
            },
            run_id: { type: 'number', description: 'Open this run' }
          }
        }
      },
      execute: args => open(requestOf(args))
    });

    app.commands.addCommand(WorkspaceCommandIDs.createTrigger, {
      label: trans.__('Create API trigger…'),
      caption: trans.__(
        'Create an API trigger for this notebook’s pipeline and show it in the Pipelines workspace'
      ),
      icon: mageIcon,
      describedBy: {
        args: {
          type: 'object',
          properties: {
            path: {
              type: 'string',
              description:
                'The notebook (root-relative path); default: the file browser selection'
            }
          }
        }
      },
      isVisible: () => {
        const item = browserFactory?.tracker.currentWidget
          ?.selectedItems()
          .next();
        return !item || item.done ? false : item.value.type === 'notebook';
      },
      execute: async args => {
        let path = typeof args.path === 'string' ? args.path : '';
        if (!path) {
          const item = browserFactory?.tracker.currentWidget
            ?.selectedItems()
            .next();
          path = item && !item.done ? item.value.path : '';
        }
        if (!path) {
          return;
        }
        const uuid = pipelineUuidOf(path);
        const base = uuid.slice(uuid.lastIndexOf('/') + 1);
        const answer = await InputDialog.getText({
          title: trans.__('Create API trigger for %1', path),
          label: trans.__('Trigger name'),
          text: `${base.replace(/[^A-Za-z0-9_]+/g, '_')}_api`,
          okLabel: trans.__('Create')
        });
        const name = answer.value?.trim();
        if (!answer.button.accept || !name) {
          return;
        }
        let triggerId: number;
        try {
          const trigger = await (await getApi()).createTrigger(uuid, { name });
          triggerId = trigger.id;
        } catch (err) {
          await report(trans.__('Creating the trigger'), err);
          return;
        }
        await open({ tab: 'triggers', triggerId });
      }
    });

    palette?.addItem({
      command: WorkspaceCommandIDs.open,
      category: trans.__('Mage')
    });
    launcher?.add({
      command: WorkspaceCommandIDs.open,
      args: { isLauncher: true },
      category: trans.__('Other'),
      rank: 50
    });
    app.contextMenu.addItem({
      command: WorkspaceCommandIDs.createTrigger,
      selector: '.jp-DirListing-item[data-file-type="notebook"]',
      rank: 60
    });

    // A button in every notebook's toolbar: the workspace, filtered on the
    // notebook's pipeline.
    app.docRegistry.addWidgetExtension('Notebook', {
      createNew: (panel: NotebookPanel) => {
        const button = new ToolbarButton({
          icon: mageIcon,
          className: 'jp-mage-NotebookWorkspaceButton',
          tooltip: trans.__('Show the runs of this pipeline'),
          onClick: () =>
            void app.commands.execute(WorkspaceCommandIDs.open, {
              tab: 'runs',
              pipeline_uuid: pipelineUuidOf(panel.context.path)
            })
        });
        panel.toolbar.insertItem(10, 'mage-workspace', button);
        return button;
      }
    });
  }
};
