// An instance's engine log: the last lines, then new ones as they come (follow), and the whole file as a
// download.

import { DownloadOutlined } from "@ant-design/icons";
import { Alert, Button, Drawer, Space, Switch, Typography } from "antd";
import { useEffect, useRef, useState } from "react";
import { describe, send } from "../../api/http";
import type { ModelInstance } from "../../api/types";
import { useT } from "../../i18n";

const KEEP_LINES = 5000;
const TAIL = 500;

export default function LogsDrawer({ instance, onClose }: { instance: ModelInstance | null; onClose: () => void }) {
  const t = useT();
  const [text, setText] = useState("");
  const [follow, setFollow] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const [streaming, setStreaming] = useState(false);
  const box = useRef<HTMLPreElement>(null);
  const id = instance?.id;

  useEffect(() => {
    if (id === undefined) return;
    const abort = new AbortController();
    setText("");
    setError(null);
    let lines: string[] = [];
    let partial = "";
    (async () => {
      setStreaming(true);
      try {
        const response = await send("GET", `/v2/model-instances/${id}/logs?tail=${TAIL}&follow=${follow}`, undefined, {
          signal: abort.signal,
        });
        const reader = response.body!.getReader();
        const decoder = new TextDecoder();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          const chunk = partial + decoder.decode(value, { stream: true });
          const parts = chunk.split("\n");
          partial = parts.pop() ?? "";
          lines = [...lines, ...parts].slice(-KEEP_LINES);
          setText(lines.join("\n") + (partial ? `\n${partial}` : ""));
        }
      } catch (failure) {
        if (!abort.signal.aborted) setError(describe(failure));
      } finally {
        if (!abort.signal.aborted) setStreaming(false);
      }
    })();
    return () => abort.abort();
  }, [id, follow]);

  useEffect(() => {
    if (follow && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [text, follow]);

  const download = async () => {
    try {
      const response = await send("GET", `/v2/model-instances/${id}/logs?tail=-1&follow=false`);
      const url = URL.createObjectURL(await response.blob());
      const link = document.createElement("a");
      link.href = url;
      link.download = `${instance?.name ?? id}.log`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (failure) {
      setError(describe(failure));
    }
  };

  return (
    <Drawer
      open={instance !== null}
      onClose={onClose}
      size="large"
      width="min(1000px, 90vw)"
      title={t("logs.title", { name: instance?.name ?? "" })}
      extra={
        <Space>
          <Switch checked={follow} onChange={setFollow} data-testid="logs-follow" /> {t("logs.follow")}
          <Button icon={<DownloadOutlined />} onClick={download} data-testid="logs-download">
            {t("logs.download")}
          </Button>
        </Space>
      }
    >
      {error && <Alert type="error" showIcon message={error} style={{ marginBottom: 12 }} />}
      <Typography.Text type="secondary" style={{ fontSize: 12 }}>
        {streaming && follow ? t("logs.following") : t("logs.lastLines", { n: TAIL })}
      </Typography.Text>
      <pre
        ref={box}
        data-testid="logs-text"
        style={{
          background: "#1e1e1e",
          color: "#d4d4d4",
          fontSize: 12,
          padding: 12,
          borderRadius: 6,
          height: "calc(100vh - 180px)",
          overflow: "auto",
          whiteSpace: "pre-wrap",
          wordBreak: "break-all",
          margin: "8px 0 0",
        }}
      >
        {text || (streaming ? "…" : t("logs.empty"))}
      </pre>
    </Drawer>
  );
}
