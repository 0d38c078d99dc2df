/**
 * jupyter-mage: the JupyterLab plugins (sidebar and block tools).
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { JSONObject, MageAPI } from './api';
import {
  addBlockCommands,
  CommandIDs as BlockCommandIDs
} from './blockcommands';
import { watchNotebooks } from './handrun';
import { mageIcon } from './icons';
import { MageModel, reportError } from './model';
import { MageSidebar, pipelinePath } from './widgets/sidebar';
import { WorkspaceCommandIDs, workspacePlugin } from './workspace/plugin';

/** Command ids of the sidebar. */
export namespace CommandIDs {
  export const openSidebar = 'jupyter-mage:open-sidebar';
  export const refreshPipelines = 'jupyter-mage:refresh-pipelines';
}

const SIDEBAR_ID = 'jupyter-mage-sidebar';

/**
 * The "Pipelines" sidebar.
 */
const sidebarPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-mage:sidebar',
  description: 'The Pipelines sidebar: pipelines, triggers and runs.',
  autoStart: true,
  optional: [
    ILayoutRestorer,
    ISettingRegistry,
    IDocumentManager,
    ICommandPalette,
    ITranslator
  ],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    docManager: IDocumentManager | null,
    palette: ICommandPalette | null,
    translator: ITranslator | null
  ): void => {
    const trans = (translator ?? nullTranslator).load('jupyter_mage');
    const api = new MageAPI(app.serviceManager.serverSettings);
    const model = new MageModel(api, trans);

    const openPath = (path: string): void => {
      void app.commands
        .execute('docmanager:open', { path })
        .catch(err => reportError(trans, trans.__('Opening %1', path), err));
    };

    const saveVariables = async (
      uuid: string,
      variables: JSONObject
    ): Promise<boolean> => {
      const path = pipelinePath(model.pipeline ?? { uuid });
      // When the notebook is open, write through its document so the open
      // copy and the file stay one (no "file changed on disk" conflict).
      const widget = docManager?.findWidget(path);
      if (widget instanceof NotebookPanel && widget.model) {
        try {
          const mage = widget.model.getMetadata('mage');
          const current =
            mage && typeof mage === 'object' && !Array.isArray(mage)
              ? mage
              : {};
          widget.model.setMetadata('mage', { ...current, variables });
          await widget.context.save();
          await model.refresh(true);
          return true;
        } catch (err) {
          reportError(trans, trans.__('Saving the variables'), err);
          return false;
        }
      }
      const done = await model.act(trans.__('Saving the variables'), () =>
        api.setPipelineVariables(uuid, variables)
      );
      return done !== undefined;
    };

    const openWorkspace = (): void => {
      void app.commands.execute(WorkspaceCommandIDs.open, {});
    };

    const sidebar = new MageSidebar({
      model,
      trans,
      openPath,
      saveVariables,
      openWorkspace
    });
    sidebar.id = SIDEBAR_ID;
    sidebar.title.icon = mageIcon;
    sidebar.title.caption = trans.__('Mage pipelines');
    app.shell.add(sidebar, 'left', { rank: 700 });
    restorer?.add(sidebar, SIDEBAR_ID);
    sidebar.disposed.connect(() => model.dispose());

    app.commands.addCommand(CommandIDs.openSidebar, {
      label: trans.__('Show Mage Pipelines'),
      icon: mageIcon,
      execute: () => app.shell.activateById(SIDEBAR_ID)
    });
    app.commands.addCommand(CommandIDs.refreshPipelines, {
      label: trans.__('Refresh Mage Pipelines'),
      execute: () => model.refresh(true)
    });
    palette?.addItem({ command: CommandIDs.openSidebar, category: 'Mage' });
    palette?.addItem({
      command: CommandIDs.refreshPipelines,
      category: 'Mage'
    });

    // A first look at the server, so a missing server extension is explained
    // once even before the sidebar is opened.
    void model.refresh();

    if (settingRegistry) {
      settingRegistry
        .load(sidebarPlugin.id)
        .then(settings => {
          const apply = (): void => {
            const interval = settings.get('refreshInterval').composite;
            if (typeof interval === 'number') {
              model.interval = interval;
            }
          };
          apply();
          settings.changed.connect(apply);
        })
        .catch(err =>
          console.error(
            'jupyter-mage: could not load the sidebar settings',
            err
          )
        );
    }
  }
};

/**
 * Block tools in the notebook: make a cell a block, set its name and upstream.
 */
const blocksPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-mage:blocks',
  description: 'Notebook commands to make cells Mage blocks.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    translator: ITranslator | null
  ): void => {
    const trans = (translator ?? nullTranslator).load('jupyter_mage');
    addBlockCommands(app.commands, tracker, trans);
    watchNotebooks(tracker, trans);
    for (const command of [
      BlockCommandIDs.makeBlock,
      BlockCommandIDs.setBlockLinks
    ]) {
      palette?.addItem({ command, category: 'Mage' });
    }
  }
};

export default [sidebarPlugin, blocksPlugin, workspacePlugin];
