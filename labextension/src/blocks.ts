/**
 * Blocks in the notebook: block templates (in the shape of Mage's), cell tags,
 * and reading the pipeline's blocks from an open notebook.
 */
import { BLOCK_TYPES, BlockType } from './api';

/** Tag prefix that names a block. */
export const NAME_TAG = 'name:';
/** Tag prefix that lists a block's upstream blocks. */
export const UPSTREAM_TAG = 'upstream:';

/** The decorators that name a block of each type (add-on blocks use their own). */
const DECORATORS: Partial<Record<BlockType, string[]>> = {
  data_loader: ['data_loader'],
  transformer: ['transformer'],
  data_exporter: ['data_exporter'],
  custom: ['custom'],
  sensor: ['sensor'],
  conditional: ['condition'],
  callback: ['callback', 'on_success', 'on_failure']
};

/** The guarded import Mage's templates start with; runs unchanged in Mage too. */
function guardedImport(decorator: string): string {
  return (
    `if '${decorator}' not in globals():\n` +
    `    from mage_ai.data_preparation.decorators import ${decorator}\n`
  );
}

const TEST_FUNCTION =
  '\n\n@test\n' +
  'def test_output(output, *args) -> None:\n' +
  '    """Checks the block output; a failing assertion fails the block."""\n' +
  "    assert output is not None, 'The output is undefined'\n";

/**
 * The starting code of a block of the given type: Mage's layout (guarded
 * decorator imports, one decorated function, an optional `@test`).
 */
export function blockTemplate(type: BlockType): string {
  switch (type) {
    case 'data_loader':
      return (
        guardedImport('data_loader') +
        guardedImport('test') +
        '\n\n@data_loader\n' +
        'def load_data(*args, **kwargs):\n' +
        '    """\n' +
        '    Load data from any source.\n\n' +
        '    Returns:\n' +
        '        Anything (e.g. data frame, dictionary, list, int, str).\n' +
        '    """\n' +
        '    # Your data loading code here\n\n' +
        '    return {}\n' +
        TEST_FUNCTION
      );
    case 'transformer':
      return (
        guardedImport('transformer') +
        guardedImport('test') +
        '\n\n@transformer\n' +
        'def transform(data, *args, **kwargs):\n' +
        '    """\n' +
        '    Transform the output of the upstream block.\n\n' +
        '    Args:\n' +
        '        data: the output of the first upstream block\n' +
        '        args: the outputs of further upstream blocks, one each\n\n' +
        '    Returns:\n' +
        '        Anything (e.g. data frame, dictionary, list, int, str).\n' +
        '    """\n' +
        '    # Your transformation code here\n\n' +
        '    return data\n' +
        TEST_FUNCTION
      );
    case 'data_exporter':
      return (
        guardedImport('data_exporter') +
        '\n\n@data_exporter\n' +
        'def export_data(data, *args, **kwargs):\n' +
        '    """\n' +
        '    Export the output of the upstream block.\n\n' +
        '    Args:\n' +
        '        data: the output of the first upstream block\n' +
        '        args: the outputs of further upstream blocks, one each\n' +
        '    """\n' +
        '    # Your export code here\n'
      );
    case 'custom':
      return (
        guardedImport('custom') +
        guardedImport('test') +
        '\n\n@custom\n' +
        'def transform_custom(*args, **kwargs):\n' +
        '    """\n' +
        '    Custom code; args are the outputs of the upstream blocks, if any.\n\n' +
        '    Returns:\n' +
        '        Anything (e.g. data frame, dictionary, list, int, str).\n' +
        '    """\n' +
        '    # Your code here\n\n' +
        '    return {}\n' +
        TEST_FUNCTION
      );
    case 'sensor':
      return (
        guardedImport('sensor') +
        '\n\n@sensor\n' +
        'def check_condition(*args, **kwargs) -> bool:\n' +
        '    """\n' +
        '    Return True when the condition the pipeline waits for is met.\n' +
        '    """\n' +
        '    return True\n'
      );
    case 'conditional':
      return (
        guardedImport('condition') +
        '\n\n@condition\n' +
        'def evaluate_condition(*args, **kwargs) -> bool:\n' +
        '    """\n' +
        '    Return False to skip the block this condition is attached to\n' +
        '    (its upstream block).\n' +
        '    """\n' +
        '    return True\n'
      );
    case 'callback':
      return (
        guardedImport('callback') +
        "\n\n@callback('success')\n" +
        'def on_parent_success(parent_block_data, **kwargs):\n' +
        '    """\n' +
        '    Runs after the block this callback is attached to (its upstream\n' +
        '    block) succeeds.\n' +
        '    """\n' +
        '    pass\n'
      );
    case 'scratchpad':
      return (
        '"""\n' +
        'Scratchpad: code to try things out. It never runs in a pipeline run.\n' +
        '"""\n'
      );
  }
}

/** Whether a tag is a block-type tag. */
export function isTypeTag(tag: string): tag is BlockType {
  return (BLOCK_TYPES as readonly string[]).includes(tag);
}

/** The value of the first tag with that prefix, or `null`. */
export function tagValue(tags: string[], prefix: string): string | null {
  const tag = tags.find(t => t.startsWith(prefix));
  return tag === undefined ? null : tag.slice(prefix.length).trim();
}

/**
 * New tags for a cell made a block of `type`: other block-type tags go, the
 * rest (name, upstream, user tags) stays.
 */
export function tagsWithType(tags: string[], type: BlockType): string[] {
  return [type, ...tags.filter(t => !isTypeTag(t))];
}

/**
 * New tags with a block's name and upstream set.
 *
 * @param name the block name, or '' for the default name
 * @param upstream the upstream blocks; `null` for the default (the block above)
 */
export function tagsWithLinks(
  tags: string[],
  name: string,
  upstream: string[] | null
): string[] {
  const rest = tags.filter(
    t => !t.startsWith(NAME_TAG) && !t.startsWith(UPSTREAM_TAG)
  );
  if (name.trim()) {
    rest.push(`${NAME_TAG}${name.trim()}`);
  }
  // One tag per upstream block (nbformat forbids commas in tags); an empty
  // list is written `upstream:` alone, which makes a root block.
  if (upstream !== null) {
    if (upstream.length === 0) {
      rest.push(UPSTREAM_TAG);
    }
    for (const up of upstream) {
      rest.push(`${UPSTREAM_TAG}${up}`);
    }
  }
  return rest;
}

/** Whether a block name is valid (the server's rule). */
export function isValidBlockName(name: string): boolean {
  return /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(name);
}

/** A block as read from a notebook in the browser. */
export interface INotebookBlock {
  uuid: string;
  type: BlockType;
  cellIndex: number;
  /** Upstream from the tag, or `null` when the block above is the default. */
  upstream: string[] | null;
}

/** A cell as far as blocks care. */
export interface ICellLike {
  cellType: string;
  source: string;
  tags: string[];
}

/**
 * The name of the function decorated with the block's type, if any. A light
 * reading of the source; the server's parser is the reference.
 */
export function decoratedFunctionName(
  source: string,
  type: BlockType
): string | null {
  const names = DECORATORS[type];
  if (!names) {
    return null;
  }
  const re = new RegExp(
    `^@(?:${names.join('|')})(?:\\([^)]*\\))?\\s*\\n(?:@.*\\n)*(?:async\\s+)?def\\s+([A-Za-z_]\\w*)`,
    'm'
  );
  const m = re.exec(source);
  return m ? m[1] : null;
}

/**
 * The upstream names in a cell's tags: every `upstream:` tag, in order, each
 * possibly a comma list; `null` when there is no such tag.
 */
export function upstreamFromTags(tags: string[]): string[] | null {
  const values = tags
    .filter(t => t.startsWith(UPSTREAM_TAG))
    .map(t => t.slice(UPSTREAM_TAG.length));
  if (!values.length) {
    return null;
  }
  return values.flatMap(v =>
    v
      .split(',')
      .map(name => name.trim())
      .filter(Boolean)
  );
}

/**
 * The blocks of a notebook, named as the server names them: the `name:` tag,
 * else the decorated function, else `<type>_<n>`.
 */
export function notebookBlocks(cells: ICellLike[]): INotebookBlock[] {
  const blocks: INotebookBlock[] = [];
  cells.forEach((cell, index) => {
    if (cell.cellType !== 'code') {
      return;
    }
    const type = cell.tags.find(isTypeTag);
    if (!type) {
      return;
    }
    let uuid =
      tagValue(cell.tags, NAME_TAG) || decoratedFunctionName(cell.source, type);
    if (!uuid) {
      uuid = `${type}_${blocks.filter(b => b.type === type).length + 1}`;
    }
    blocks.push({
      uuid,
      type,
      cellIndex: index,
      upstream: upstreamFromTags(cell.tags)
    });
  });
  return blocks;
}
