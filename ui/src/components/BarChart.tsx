// A small bar chart in SVG: enough for counts by state and tokens by hour, without a charting library's
// weight in the page.

import { Empty } from "antd";

export interface Bar {
  label: string;
  value: number;
  color?: string;
  stack?: { value: number; color: string }[]; // drawn bottom-up instead of `value` when given
}

export default function BarChart({ bars, height = 180, empty }: { bars: Bar[]; height?: number; empty?: string }) {
  const total = bars.reduce((sum, bar) => sum + bar.value, 0);
  if (!bars.length || total === 0) return <Empty image={Empty.PRESENTED_IMAGE_SIMPLE} description={empty} />;
  const max = Math.max(...bars.map((bar) => bar.value));
  const width = Math.max(bars.length * 56, 240);
  const plot = height - 36;
  const step = width / bars.length;
  return (
    <svg viewBox={`0 0 ${width} ${height}`} width="100%" height={height} role="img">
      {bars.map((bar, i) => {
        const w = Math.min(step * 0.6, 56);
        const x = i * step + (step - w) / 2;
        const parts = bar.stack ?? [{ value: bar.value, color: bar.color ?? "#1677ff" }];
        let y = plot + 4;
        return (
          <g key={bar.label}>
            {parts.map((part, j) => {
              const h = max > 0 ? (part.value / max) * (plot - 14) : 0;
              y -= h;
              return <rect key={j} x={x} y={y} width={w} height={h} fill={part.color} rx={2} />;
            })}
            <text x={x + w / 2} y={y - 4} textAnchor="middle" fontSize={11} fill="#555">
              {bar.value}
            </text>
            <text x={x + w / 2} y={height - 8} textAnchor="middle" fontSize={11} fill="#888">
              {bar.label.length > 10 ? `${bar.label.slice(0, 9)}…` : bar.label}
            </text>
          </g>
        );
      })}
    </svg>
  );
}
