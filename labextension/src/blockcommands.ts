/**
 * Notebook commands that make the active cell a block and link it to others.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { ICellModel } from '@jupyterlab/cells';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { TranslationBundle } from '@jupyterlab/translation';
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import { BLOCK_TYPES, BlockType } from './api';
import {
  blockTemplate,
  ICellLike,
  INotebookBlock,
  isTypeTag,
  isValidBlockName,
  NAME_TAG,
  notebookBlocks,
  tagsWithLinks,
  tagsWithType,
  tagValue
} from './blocks';
import { loadHandRunsIfPipeline } from './handrun';
import { blockIcon } from './icons';

/** Command ids of the block tools. */
export namespace CommandIDs {
  export const makeBlock = 'jupyter-mage:make-block';
  export const setBlockLinks = 'jupyter-mage:set-block-links';
}

/** The tags of a cell model. */
function cellTags(model: ICellModel): string[] {
  const tags = model.getMetadata('tags');
  return Array.isArray(tags)
    ? tags.filter((t): t is string => typeof t === 'string')
    : [];
}

/** Write the tags of a cell model (removing the key when empty). */
function setCellTags(model: ICellModel, tags: string[]): void {
  if (tags.length) {
    model.setMetadata('tags', tags);
  } else {
    model.deleteMetadata('tags');
  }
}

/** The cells of the current notebook, as the block parser wants them. */
function cellsOf(tracker: INotebookTracker): ICellLike[] {
  const model = tracker.currentWidget?.content.model;
  if (!model) {
    return [];
  }
  const cells: ICellLike[] = [];
  for (let i = 0; i < model.cells.length; i++) {
    const cell = model.cells.get(i);
    cells.push({
      cellType: cell.type,
      source: cell.sharedModel.getSource(),
      tags: cellTags(cell)
    });
  }
  return cells;
}

/** The dialog body of "Make cell a block". */
class MakeBlockBody
  extends Widget
  implements Dialog.IBodyWidget<{ type: BlockType; template: boolean }>
{
  constructor(
    trans: TranslationBundle,
    current: BlockType,
    cellIsEmpty: boolean
  ) {
    super();
    this.addClass('jp-mage-Dialog');
    const typeLabel = document.createElement('label');
    typeLabel.className = 'jp-mage-Field';
    typeLabel.textContent = trans.__('Block type');
    this._select = document.createElement('select');
    this._select.className = 'jp-mod-styled jp-mage-BlockTypeSelect';
    for (const type of BLOCK_TYPES) {
      const option = document.createElement('option');
      option.value = type;
      option.textContent = type;
      option.selected = type === current;
      this._select.appendChild(option);
    }
    typeLabel.appendChild(this._select);
    this.node.appendChild(typeLabel);

    const templateLabel = document.createElement('label');
    templateLabel.className = 'jp-mage-Checkbox';
    this._template = document.createElement('input');
    this._template.type = 'checkbox';
    this._template.className = 'jp-mage-InsertTemplate';
    this._template.checked = cellIsEmpty;
    templateLabel.appendChild(this._template);
    templateLabel.appendChild(
      document.createTextNode(
        cellIsEmpty
          ? trans.__('Insert the block template')
          : trans.__("Replace the cell's code with the block template")
      )
    );
    this.node.appendChild(templateLabel);
  }

  getValue(): { type: BlockType; template: boolean } {
    return {
      type: this._select.value as BlockType,
      template: this._template.checked
    };
  }

  private _select: HTMLSelectElement;
  private _template: HTMLInputElement;
}

/** The dialog body of "Set block name and upstream blocks". */
class BlockLinksBody
  extends Widget
  implements Dialog.IBodyWidget<{ name: string; upstream: string[] | null }>
{
  constructor(
    trans: TranslationBundle,
    self: INotebookBlock,
    explicitName: string,
    others: INotebookBlock[]
  ) {
    super();
    this.addClass('jp-mage-Dialog');
    const nameLabel = document.createElement('label');
    nameLabel.className = 'jp-mage-Field';
    nameLabel.textContent = trans.__('Block name (empty: default)');
    this._name = document.createElement('input');
    this._name.className = 'jp-mod-styled jp-mage-BlockNameInput';
    this._name.value = explicitName;
    this._name.placeholder = self.uuid;
    nameLabel.appendChild(this._name);
    this.node.appendChild(nameLabel);

    const fieldset = document.createElement('fieldset');
    fieldset.className = 'jp-mage-Upstream';
    const legend = document.createElement('legend');
    legend.textContent = trans.__('Upstream blocks');
    fieldset.appendChild(legend);

    const mkRadio = (label: string, checked: boolean): HTMLInputElement => {
      const l = document.createElement('label');
      l.className = 'jp-mage-Checkbox';
      const r = document.createElement('input');
      r.type = 'radio';
      r.name = 'jp-mage-upstream-mode';
      r.checked = checked;
      l.appendChild(r);
      l.appendChild(document.createTextNode(label));
      fieldset.appendChild(l);
      return r;
    };
    this._default = mkRadio(
      trans.__('Default: the nearest block above'),
      self.upstream === null
    );
    const explicit = mkRadio(
      trans.__('These blocks, in this order (none: a root block):'),
      self.upstream !== null
    );
    const list = document.createElement('div');
    list.className = 'jp-mage-UpstreamList';
    const chosen = new Set(self.upstream ?? []);
    for (const block of others) {
      const l = document.createElement('label');
      l.className = 'jp-mage-Checkbox';
      const c = document.createElement('input');
      c.type = 'checkbox';
      c.value = block.uuid;
      c.checked = chosen.has(block.uuid);
      c.addEventListener('change', () => {
        explicit.checked = true;
      });
      this._boxes.push(c);
      l.appendChild(c);
      l.appendChild(document.createTextNode(`${block.uuid} (${block.type})`));
      list.appendChild(l);
    }
    if (!others.length) {
      list.textContent = trans.__('No other block in this notebook.');
    }
    fieldset.appendChild(list);
    this.node.appendChild(fieldset);
  }

  getValue(): { name: string; upstream: string[] | null } {
    return {
      name: this._name.value.trim(),
      upstream: this._default.checked
        ? null
        : this._boxes.filter(b => b.checked).map(b => b.value)
    };
  }

  private _name: HTMLInputElement;
  private _default: HTMLInputElement;
  private _boxes: HTMLInputElement[] = [];
}

/**
 * Add the block commands to the registry.
 */
export function addBlockCommands(
  commands: CommandRegistry,
  tracker: INotebookTracker,
  trans: TranslationBundle
): void {
  const isBlock = (): boolean => {
    const cell = tracker.activeCell;
    return (
      cell !== null &&
      cell.model.type === 'code' &&
      cellTags(cell.model).some(isTypeTag)
    );
  };

  // The cell toolbar shows "set links" enabled only on blocks: refresh it
  // whenever another cell becomes active.
  tracker.activeCellChanged.connect(() =>
    commands.notifyCommandChanged(CommandIDs.setBlockLinks)
  );

  commands.addCommand(CommandIDs.makeBlock, {
    label: trans.__('Make Cell a Mage Block…'),
    caption: trans.__(
      'Make the active cell a pipeline block: pick its type, insert the template, set the tags'
    ),
    icon: args => (args['toolbar'] ? blockIcon : undefined),
    isEnabled: () => tracker.activeCell !== null,
    execute: async () => {
      const panel = tracker.currentWidget;
      if (!panel || !tracker.activeCell) {
        Notification.warning(trans.__('Select a cell of a notebook first.'));
        return;
      }
      if (tracker.activeCell.model.type !== 'code') {
        NotebookActions.changeCellType(panel.content, 'code');
      }
      const cell = tracker.activeCell;
      if (!cell) {
        return;
      }
      const tags = cellTags(cell.model);
      const blocks = notebookBlocks(cellsOf(tracker));
      const current =
        tags.find(isTypeTag) ??
        (blocks.length === 0
          ? 'data_loader'
          : blocks.length === 1
            ? 'transformer'
            : 'data_exporter');
      const empty = cell.model.sharedModel.getSource().trim() === '';
      const result = await showDialog({
        title: trans.__('Make cell a Mage block'),
        body: new MakeBlockBody(trans, current, empty),
        buttons: [
          Dialog.cancelButton(),
          Dialog.okButton({ label: trans.__('Make block') })
        ],
        focusNodeSelector: 'select'
      });
      if (!result.button.accept || !result.value) {
        return;
      }
      const { type, template } = result.value;
      setCellTags(cell.model, tagsWithType(tags, type));
      if (template) {
        cell.model.sharedModel.setSource(blockTemplate(type));
      }
      commands.notifyCommandChanged(CommandIDs.setBlockLinks);
      // The first block of a notebook: its kernel gets hand-run support now.
      void loadHandRunsIfPipeline(panel, trans);
    }
  });

  commands.addCommand(CommandIDs.setBlockLinks, {
    label: trans.__('Set Mage Block Name and Upstream Blocks…'),
    caption: trans.__(
      'Name the active block and choose the blocks it reads from'
    ),
    icon: args => (args['toolbar'] ? blockIcon : undefined),
    // Enabled on any code cell: a cell toolbar button may keep a stale state,
    // so a non-block is explained at execution instead.
    isEnabled: () => tracker.activeCell?.model.type === 'code',
    execute: async () => {
      const panel = tracker.currentWidget;
      const cell = tracker.activeCell;
      if (!panel || !cell || !isBlock()) {
        Notification.warning(
          trans.__('The active cell is not a block: make it a block first.')
        );
        return;
      }
      const index = panel.content.activeCellIndex;
      const blocks = notebookBlocks(cellsOf(tracker));
      const self = blocks.find(b => b.cellIndex === index);
      if (!self) {
        return;
      }
      // Blocks that can be upstream (or, for an add-on, its parent).
      const others = blocks.filter(
        b =>
          b.cellIndex !== index &&
          !['scratchpad', 'conditional', 'callback'].includes(b.type)
      );
      const tags = cellTags(cell.model);
      const result = await showDialog({
        title: trans.__('Block name and upstream blocks'),
        body: new BlockLinksBody(
          trans,
          self,
          tagValue(tags, NAME_TAG) ?? '',
          others
        ),
        buttons: [
          Dialog.cancelButton(),
          Dialog.okButton({ label: trans.__('Save') })
        ],
        focusNodeSelector: 'input'
      });
      if (!result.button.accept || !result.value) {
        return;
      }
      const { name, upstream } = result.value;
      if (name && !isValidBlockName(name)) {
        Notification.error(
          trans.__(
            'Invalid block name “%1”: use letters, digits, _ . - (not starting with . or -).',
            name
          )
        );
        return;
      }
      if (name && others.some(b => b.uuid === name)) {
        Notification.error(
          trans.__('Another block is already named “%1”.', name)
        );
        return;
      }
      setCellTags(cell.model, tagsWithLinks(tags, name, upstream));
    }
  });
}
