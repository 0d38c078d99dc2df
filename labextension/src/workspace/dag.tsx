/**
 * A picture of a pipeline's DAG: its blocks as boxes coloured by their run's
 * status, and arrows from each upstream block to its downstream blocks.
 *
 * The layout comes from dagre (`@dagrejs/dagre`), drawn as SVG by React.
 * Why dagre: a pipeline is a small directed acyclic graph, which is exactly what
 * dagre's layered (Sugiyama) layout is for; it is synchronous, so the picture is
 * laid out in the same render that the poll triggers; it is small (about 50 kB
 * minified, one dependency, its own graphlib) and ships its TypeScript types;
 * and it is kept up (the dagrejs organisation releases it regularly). elkjs lays
 * out more kinds of graphs but is about 1.5 MB of compiled Java and asynchronous
 * (a web worker), which is a lot for a dozen boxes.
 */
import dagre, { EdgeLabel, GraphLabel, NodeLabel } from '@dagrejs/dagre';
import * as React from 'react';
import { TranslationBundle } from '@jupyterlab/translation';

/** One block of the picture. */
export interface IDagBlock {
  uuid: string;
  type: string;
  upstream_blocks: string[];
  /** The block run's status, or `pending` when the run has not reached it. */
  status: string;
}

/** A laid-out box. */
interface INodeBox {
  block: IDagBlock;
  x: number;
  y: number;
  width: number;
  height: number;
  label: string;
}

/** A laid-out arrow. */
interface IEdgeLine {
  from: string;
  to: string;
  points: { x: number; y: number }[];
}

/** A laid-out picture. */
interface ILayout {
  nodes: INodeBox[];
  edges: IEdgeLine[];
  width: number;
  height: number;
}

const NODE_HEIGHT = 44;
const MAX_LABEL = 28;

/** The label shown in a box: the uuid, cut when very long. */
function boxLabel(uuid: string): string {
  return uuid.length > MAX_LABEL ? `${uuid.slice(0, MAX_LABEL - 1)}…` : uuid;
}

/**
 * Lay out the blocks left to right (upstream on the left).
 *
 * Only the structure (uuids, types, edges) is laid out; statuses change the
 * colours, not the positions, so a live run never makes the picture jump.
 */
function layout(
  blocks: Pick<IDagBlock, 'uuid' | 'type' | 'upstream_blocks'>[]
): {
  positions: Map<string, { x: number; y: number; width: number }>;
  edges: IEdgeLine[];
  width: number;
  height: number;
} {
  const g = new dagre.graphlib.Graph<GraphLabel, NodeLabel, EdgeLabel>();
  g.setGraph({
    rankdir: 'LR',
    nodesep: 20,
    ranksep: 56,
    marginx: 8,
    marginy: 8
  });
  g.setDefaultEdgeLabel(() => ({}));
  const known = new Set(blocks.map(b => b.uuid));
  for (const b of blocks) {
    // Width from the two lines: the name in a 12 px code font (about 7.5 px
    // a character) and "type · status" in 11 px (about 6.5 px), with room for
    // the longest status ("upstream_failed") so a live run never overflows.
    const name = Math.max(boxLabel(b.uuid).length, 12) * 7.5;
    const status = (b.type.length + 3 + 'upstream_failed'.length) * 6.5;
    g.setNode(b.uuid, {
      width: Math.round(Math.max(name, status) + 28),
      height: NODE_HEIGHT
    });
  }
  for (const b of blocks) {
    for (const up of b.upstream_blocks ?? []) {
      if (known.has(up) && up !== b.uuid) {
        g.setEdge(up, b.uuid);
      }
    }
  }
  dagre.layout(g);
  const positions = new Map<string, { x: number; y: number; width: number }>();
  for (const id of g.nodes()) {
    const n = g.node(id);
    positions.set(id, { x: n.x ?? 0, y: n.y ?? 0, width: n.width });
  }
  const edges = g.edges().map(e => ({
    from: e.v,
    to: e.w,
    points: (g.edge(e).points ?? []).map(p => ({ x: p.x, y: p.y }))
  }));
  const graph = g.graph();
  return {
    positions,
    edges,
    width: Math.ceil(graph.width ?? 0),
    height: Math.ceil(graph.height ?? 0)
  };
}

let markerCount = 0;

/**
 * The DAG picture. Each box is a focusable button: click, Enter or Space
 * selects the block.
 */
export function DagView(props: {
  blocks: IDagBlock[];
  selected: string | null;
  onSelect: (uuid: string) => void;
  trans: TranslationBundle;
}): JSX.Element {
  const { blocks, trans } = props;
  const structure = JSON.stringify(
    blocks.map(b => [b.uuid, b.type, b.upstream_blocks])
  );
  const laid = React.useMemo(() => layout(blocks), [structure]);
  const [markerId] = React.useState(() => `jp-mage-DagArrow-${++markerCount}`);

  const pic: ILayout = {
    nodes: blocks.map(block => {
      const p = laid.positions.get(block.uuid) ?? { x: 0, y: 0, width: 120 };
      return {
        block,
        x: p.x - p.width / 2,
        y: p.y - NODE_HEIGHT / 2,
        width: p.width,
        height: NODE_HEIGHT,
        label: boxLabel(block.uuid)
      };
    }),
    edges: laid.edges,
    width: laid.width,
    height: laid.height
  };
  const status = new Map(blocks.map(b => [b.uuid, b.status]));

  return (
    <div className="jp-mage-Dag">
      <svg
        className="jp-mage-DagSvg"
        width={pic.width}
        height={pic.height}
        viewBox={`0 0 ${pic.width} ${pic.height}`}
        role="group"
        aria-label={trans.__('Pipeline DAG')}
      >
        <defs>
          <marker
            id={markerId}
            viewBox="0 0 10 10"
            refX="9"
            refY="5"
            markerWidth="7"
            markerHeight="7"
            orient="auto-start-reverse"
          >
            <path d="M 0 0 L 10 5 L 0 10 z" className="jp-mage-DagArrowHead" />
          </marker>
        </defs>
        {pic.edges.map(e => (
          <path
            key={`${e.from}->${e.to}`}
            className={`jp-mage-DagEdge jp-mage-DagEdge-${status.get(e.from)}`}
            data-from={e.from}
            data-to={e.to}
            d={e.points
              .map((p, i) => `${i === 0 ? 'M' : 'L'} ${p.x} ${p.y}`)
              .join(' ')}
            markerEnd={`url(#${markerId})`}
          />
        ))}
        {pic.nodes.map(n => {
          const { block } = n;
          const selected = props.selected === block.uuid;
          const select = (): void => props.onSelect(block.uuid);
          return (
            <g
              key={block.uuid}
              className={`jp-mage-DagNode jp-mage-DagNode-${block.status}${
                selected ? ' jp-mod-selected' : ''
              }`}
              transform={`translate(${n.x}, ${n.y})`}
              data-block-uuid={block.uuid}
              data-status={block.status}
              tabIndex={0}
              role="button"
              aria-pressed={selected}
              aria-label={trans.__(
                'Block %1 (%2): %3',
                block.uuid,
                block.type,
                block.status
              )}
              onClick={select}
              onKeyDown={e => {
                if (e.key === 'Enter' || e.key === ' ') {
                  e.preventDefault();
                  select();
                }
              }}
            >
              <title>{`${block.uuid} (${block.type}): ${block.status}`}</title>
              <rect
                className="jp-mage-DagNodeBox"
                width={n.width}
                height={n.height}
                rx={4}
              />
              <rect
                className={`jp-mage-DagNodeType jp-mage-DagNodeType-${block.type}`}
                width={5}
                height={n.height - 8}
                x={4}
                y={4}
                rx={2}
              />
              <text className="jp-mage-DagNodeName" x={16} y={18}>
                {n.label}
              </text>
              <text className="jp-mage-DagNodeStatus" x={16} y={35}>
                {`${block.type} · ${block.status}`}
              </text>
            </g>
          );
        })}
      </svg>
    </div>
  );
}
