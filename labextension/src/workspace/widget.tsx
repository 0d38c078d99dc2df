/**
 * The Pipelines workspace: a main-area widget with two tabs, the runs of all
 * pipelines and all triggers, and the open run with its DAG.
 */
import * as React from 'react';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import {
  Button,
  ReactWidget,
  refreshIcon,
  ToolbarButton,
  UseSignal
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';

import { mageIcon } from '../icons';
import { WorkspaceModel, WorkspaceTab } from './model';
import { WorkspaceRunView } from './run';
import { RunsTab } from './runs';
import { TriggersTab } from './triggers';

/** The id of the workspace widget (one per application). */
export const WORKSPACE_ID = 'jupyter-mage-workspace';

/** The tab bar: buttons with the ARIA tab roles; arrow keys move between them. */
function Tabs(props: {
  model: WorkspaceModel;
  trans: TranslationBundle;
}): JSX.Element {
  const { model, trans } = props;
  const tabs: { id: WorkspaceTab; label: string; count?: number }[] = [
    { id: 'runs', label: trans.__('Runs') },
    {
      id: 'triggers',
      label: trans.__('Triggers'),
      count: model.triggers?.length
    }
  ];
  const refs = React.useRef<(HTMLButtonElement | null)[]>([]);
  return (
    <div
      className="jp-mage-WsTabs"
      role="tablist"
      aria-label={trans.__('Workspace')}
    >
      {tabs.map((tab, i) => {
        const selected = model.tab === tab.id;
        return (
          <button
            key={tab.id}
            ref={el => (refs.current[i] = el)}
            type="button"
            role="tab"
            id={`jp-mage-WsTab-${tab.id}`}
            aria-selected={selected}
            tabIndex={selected ? 0 : -1}
            className={`jp-mage-WsTab jp-mage-WsTab-${tab.id}${
              selected ? ' jp-mod-current' : ''
            }`}
            onClick={() => model.setTab(tab.id)}
            onKeyDown={e => {
              if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
                e.preventDefault();
                const next =
                  (i + (e.key === 'ArrowRight' ? 1 : -1) + tabs.length) %
                  tabs.length;
                model.setTab(tabs[next].id);
                refs.current[next]?.focus();
              }
            }}
          >
            {tab.label}
            {tab.count !== undefined && (
              <span className="jp-mage-WsTabCount">{tab.count}</span>
            )}
          </button>
        );
      })}
    </div>
  );
}

/** The whole workspace content. */
function WorkspaceContent(props: {
  model: WorkspaceModel;
  trans: TranslationBundle;
  openPath: (path: string) => void;
  openSidebar: () => void;
}): JSX.Element {
  const { model, trans } = props;
  let body: JSX.Element;
  if (model.tab === 'runs' && model.selectedRun !== null) {
    body = (
      <WorkspaceRunView model={model} trans={trans} openPath={props.openPath} />
    );
  } else if (model.tab === 'runs') {
    body = <RunsTab model={model} trans={trans} />;
  } else {
    body = <TriggersTab model={model} trans={trans} />;
  }
  return (
    <div className="jp-mage-WsContent">
      <div className="jp-mage-WsTop">
        <Tabs model={model} trans={trans} />
        <Button
          className="jp-mage-WsOpenSidebar"
          small
          minimal
          title={trans.__('Show the Pipelines sidebar')}
          onClick={props.openSidebar}
        >
          {trans.__('Pipelines sidebar')}
        </Button>
      </div>
      <div
        className="jp-mage-WsBody"
        role="tabpanel"
        aria-labelledby={`jp-mage-WsTab-${model.tab}`}
      >
        {body}
      </div>
    </div>
  );
}

/**
 * The content widget. It tells the model when it is shown or hidden, so
 * nothing is polled while no one can see it.
 */
export class WorkspaceView extends ReactWidget {
  constructor(
    readonly model: WorkspaceModel,
    private readonly _trans: TranslationBundle,
    private readonly _openPath: (path: string) => void,
    private readonly _openSidebar: () => void
  ) {
    super();
    this.addClass('jp-mage-Workspace');
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setVisible(false);
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this.model.setVisible(this.isVisible);
  }

  protected onBeforeDetach(msg: Message): void {
    this.model.setVisible(false);
    super.onBeforeDetach(msg);
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }

  protected render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <WorkspaceContent
            model={this.model}
            trans={this._trans}
            openPath={this._openPath}
            openSidebar={this._openSidebar}
          />
        )}
      </UseSignal>
    );
  }
}

/** Make the workspace widget, with its toolbar. */
export function createWorkspace(
  model: WorkspaceModel,
  trans: TranslationBundle,
  openPath: (path: string) => void,
  openSidebar: () => void
): MainAreaWidget<WorkspaceView> {
  const content = new WorkspaceView(model, trans, openPath, openSidebar);
  const widget = new MainAreaWidget({ content });
  widget.id = WORKSPACE_ID;
  widget.title.label = trans.__('Pipelines');
  widget.title.caption = trans.__('Mage pipelines: runs and triggers');
  widget.title.icon = mageIcon;
  widget.title.closable = true;
  widget.toolbar.addItem(
    'refresh',
    new ToolbarButton({
      icon: refreshIcon,
      label: trans.__('Refresh'),
      tooltip: trans.__('Refresh runs and triggers'),
      onClick: () => void model.refresh()
    })
  );
  return widget;
}
