// A V8 heap snapshot (v8.writeHeapSnapshot's .heapsnapshot JSON) summed by what each object is: its
// constructor for objects ("WebSocket", "Relay", "Object"), its function name for closures, its kind for
// V8's own structures ("(system) Context", "(array) (object properties)") and one line each for strings,
// numbers and code. Two of these diffed and divided by the viewers added say where a viewer's bytes go.
import { readFileSync } from 'node:fs';

export interface HeapGroup {
  count: number;
  /** Sum of self sizes, bytes. */
  selfBytes: number;
}

interface Snapshot {
  snapshot: {
    meta: {
      node_fields: string[];
      node_types: [string[], ...unknown[]];
      edge_fields: string[];
      edge_types: [string[], ...unknown[]];
    };
  };
  nodes: number[];
  edges: number[];
  strings: string[];
}

/**
 * V8's own backing stores (an object's out-of-line properties — for a dictionary-mode object such as
 * every EventEmitter's `_events` — its elements) and closures are told apart by what holds them: their
 * first retainer (in snapshot order), e.g. "WebSocket ▸ (object properties)", "(closure) Relay.onSent",
 * "(closure) WebSocket._events.pong".
 */
export function summarizeHeapSnapshot(path: string): Map<string, HeapGroup> {
  const snap = JSON.parse(readFileSync(path, 'utf8')) as Snapshot;
  const { meta } = snap.snapshot;
  const fields = meta.node_fields;
  const types = meta.node_types[0];
  const edgeTypes = meta.edge_types[0];
  const width = fields.length;
  const edgeWidth = meta.edge_fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const edgeCountAt = fields.indexOf('edge_count');
  const edgeTypeAt = meta.edge_fields.indexOf('type');
  const edgeNameAt = meta.edge_fields.indexOf('name_or_index');
  const edgeToAt = meta.edge_fields.indexOf('to_node');
  const { nodes, edges, strings } = snap;
  const count = nodes.length / width;
  // First retainer of every node, and the name of the edge it came by.
  const owner = new Int32Array(count).fill(-1);
  const via = new Array<string>(count);
  for (let n = 0, e = 0; n < count; n++) {
    const end = e + nodes[n * width + edgeCountAt]! * edgeWidth;
    for (; e < end; e += edgeWidth) {
      const et = edgeTypes[edges[e + edgeTypeAt]!]!;
      if (et === 'weak' || et === 'shortcut') continue;
      const to = edges[e + edgeToAt]! / width;
      if (owner[to] !== -1) continue;
      owner[to] = n;
      const nameOrIndex = edges[e + edgeNameAt]!;
      via[to] = et === 'element' || et === 'hidden' ? '[]' : (strings[nameOrIndex] ?? '');
    }
  }
  const typeOf = (n: number) => types[nodes[n * width + typeAt]!]!;
  const nameOf = (n: number) => strings[nodes[n * width + nameAt]!] ?? '';
  const isStore = (n: number) => {
    const t = typeOf(n);
    const name = nameOf(n);
    return (t === 'array' && name.startsWith('(object ')) || name === 'system / PropertyArray';
  };
  /** An object's label, seen through the property store that holds a closure or another store. */
  const holderOf = (n: number): string => {
    let o = owner[n]!;
    let path = via[n] ?? '';
    if (o !== -1 && isStore(o)) {
      path = `${via[o] ?? ''}.${path}`;
      o = owner[o]!;
    }
    return o === -1 ? `?.${path}` : `${keyOf(typeOf(o), nameOf(o))}.${path}`;
  };
  const out = new Map<string, HeapGroup>();
  for (let n = 0; n < count; n++) {
    const type = typeOf(n);
    const name = nameOf(n);
    let key = keyOf(type, name);
    if (isStore(n)) {
      const o = owner[n]!;
      key = `${o === -1 ? '?' : keyOf(typeOf(o), nameOf(o))} ▸ ${key}`;
    } else if (type === 'closure') {
      key = `(closure) ${name ? `${name} ← ` : ''}${holderOf(n)}`;
    }
    const g = out.get(key) ?? { count: 0, selfBytes: 0 };
    g.count++;
    g.selfBytes += nodes[n * width + sizeAt]!;
    out.set(key, g);
  }
  return out;
}

function keyOf(type: string, name: string): string {
  switch (type) {
    case 'object':
      return name;
    case 'closure':
      return `(closure) ${name || '(anonymous)'}`;
    case 'native':
      // ArrayBuffer backing stores and the like; drop per-instance detail ("… / 65536") from the name.
      return `(native) ${name.replace(/\s*\/\s*\d+$/, '')}`;
    case 'hidden':
    case 'array':
    case 'synthetic':
    case 'object shape':
      return `(${type}) ${name.replace(/\s*\/\s*\d+.*$/, '').slice(0, 60)}`;
    case 'string':
    case 'concatenated string':
    case 'sliced string':
      return '(string)';
    default:
      return `(${type})`;
  }
}

export interface HeapDiffRow {
  key: string;
  /** Per unit (viewer) added between the two snapshots. */
  countPer: number;
  bytesPer: number;
}

/** after − before, per `units`, largest first; rows under `minBytesPer` are left out. */
export function diffHeapSummaries(
  before: Map<string, HeapGroup>,
  after: Map<string, HeapGroup>,
  units: number,
  minBytesPer = 16,
): HeapDiffRow[] {
  const keys = new Set([...before.keys(), ...after.keys()]);
  const rows: HeapDiffRow[] = [];
  for (const key of keys) {
    const a = after.get(key) ?? { count: 0, selfBytes: 0 };
    const b = before.get(key) ?? { count: 0, selfBytes: 0 };
    const bytesPer = (a.selfBytes - b.selfBytes) / units;
    if (Math.abs(bytesPer) < minBytesPer) continue;
    rows.push({ key, countPer: (a.count - b.count) / units, bytesPer });
  }
  return rows.sort((x, y) => y.bytesPer - x.bytesPer);
}
