// A resource's state as a coloured tag; its message (why pending, the error's last lines) on hover.

import { Tag, Tooltip, Typography } from "antd";
import { maybe, useT } from "../i18n";

const COLORS: Record<string, string> = {
  running: "success",
  ready: "success",
  pending: "warning",
  analyzing: "processing",
  scheduled: "processing",
  initializing: "processing",
  downloading: "processing",
  starting: "processing",
  error: "error",
  unreachable: "error",
  not_ready: "error",
};

export default function StateTag({ state, message, testId }: { state: string; message?: string; testId?: string }) {
  const t = useT();
  const tag = (
    <Tag color={COLORS[state] ?? "default"} data-testid={testId} style={{ cursor: message ? "help" : undefined }}>
      {maybe(t, `state.${state}`, state)}
    </Tag>
  );
  if (!message) return tag;
  return (
    <Tooltip
      styles={{ root: { maxWidth: 640 } }}
      title={
        <Typography.Paragraph
          style={{ whiteSpace: "pre-wrap", margin: 0, color: "inherit", fontSize: 12, maxHeight: 360, overflow: "auto" }}
          data-testid={testId ? `${testId}-message` : undefined}
        >
          {message}
        </Typography.Paragraph>
      }
    >
      {tag}
    </Tooltip>
  );
}
