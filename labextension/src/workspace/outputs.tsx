/**
 * A block's output summaries, as the server builds them
 * (`jupyter_mage/runtime/summaries.py`): a DataFrame or a list of records comes
 * with `sample_data: {columns, rows}` (the first rows), shown as a table; any
 * other value as its bounded repr (`text_data`).
 */
import * as React from 'react';
import { TranslationBundle } from '@jupyterlab/translation';

/** An output summary (the fields this view reads). */
interface ISummary {
  variable_uuid?: string;
  type?: string;
  shape?: number[];
  length?: number;
  sample_data?: { columns?: unknown[]; rows?: unknown[] };
  text_data?: string;
}

/** A table cell's text: strings as they are, anything else as JSON. */
function cellText(value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** The rows and columns of a summary's sample, if it has a table. */
function sampleTable(
  summary: ISummary
): { columns: string[]; rows: unknown[][] } | null {
  const sample = summary.sample_data;
  if (
    !sample ||
    typeof sample !== 'object' ||
    !Array.isArray(sample.columns) ||
    !Array.isArray(sample.rows)
  ) {
    return null;
  }
  return {
    columns: sample.columns.map(c => String(c)),
    rows: sample.rows.map(r => (Array.isArray(r) ? r : [r]))
  };
}

/** One output: its type and size, then a table or its repr. */
export function OutputSummary(props: {
  summary: unknown;
  trans: TranslationBundle;
}): JSX.Element {
  const { trans } = props;
  if (props.summary === null || typeof props.summary !== 'object') {
    return <pre className="jp-mage-Code">{String(props.summary)}</pre>;
  }
  const s = props.summary as ISummary;
  const table = sampleTable(s);
  const total = Array.isArray(s.shape)
    ? s.shape[0]
    : typeof s.length === 'number'
      ? s.length
      : undefined;
  const size = Array.isArray(s.shape)
    ? s.shape.join(' × ')
    : typeof s.length === 'number'
      ? trans._n('%1 item', '%1 items', s.length)
      : '';
  return (
    <div className="jp-mage-Output" data-variable={s.variable_uuid}>
      <div className="jp-mage-OutputHeader">
        <code className="jp-mage-OutputType">{s.type ?? ''}</code>
        {size && <span className="jp-mage-Muted">{size}</span>}
        {table && total !== undefined && total > table.rows.length && (
          <span className="jp-mage-Muted">
            {trans.__('first %1 rows', table.rows.length)}
          </span>
        )}
      </div>
      {table ? (
        <div className="jp-mage-OutputTableWrap">
          <table className="jp-mage-OutputTable">
            <thead>
              <tr>
                {table.columns.map((c, i) => (
                  <th key={i} scope="col">
                    {c}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {table.rows.map((row, i) => (
                <tr key={i}>
                  {table.columns.map((_, j) => (
                    <td key={j}>{cellText(row[j])}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : (
        <pre className="jp-mage-Code jp-mage-OutputText">
          {s.text_data ?? JSON.stringify(s)}
        </pre>
      )}
    </div>
  );
}
