// Playground → Chat: talk to any running model with streaming, a system prompt and sampling settings, and
// see the same request as curl and Python.

import { ClearOutlined, CodeOutlined, SendOutlined, StopOutlined } from "@ant-design/icons";
import { Alert, Button, Card, Col, Empty, Form, Input, InputNumber, Row, Slider, Space, Typography } from "antd";
import { useCallback, useEffect, useRef, useState } from "react";
import { describe } from "../../api/http";
import { useT } from "../../i18n";
import CodeModal from "./CodeModal";
import ModelPicker from "./ModelPicker";
import { curlCode, chatBody, pythonChatCode, streamChat, type ChatMessage, type ChatSettings, type StreamStats } from "./openai";

export default function Chat() {
  const t = useT();
  const [settings, setSettings] = useState<ChatSettings>({ model: "", system: "", temperature: 0.7, max_tokens: 512, top_p: 1 });
  const [history, setHistory] = useState<ChatMessage[]>([]);
  const [draft, setDraft] = useState("");
  const [answer, setAnswer] = useState<string | null>(null);
  const [stats, setStats] = useState<StreamStats | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [showCode, setShowCode] = useState(false);
  const abort = useRef<AbortController | null>(null);
  const bottom = useRef<HTMLDivElement>(null);
  const update = (patch: Partial<ChatSettings>) => setSettings((previous) => ({ ...previous, ...patch }));
  const setModel = useCallback((model: string) => setSettings((previous) => ({ ...previous, model })), []);

  useEffect(() => {
    // (a block: Chromium's scrollIntoView now returns a promise, which React would take for a cleanup)
    bottom.current?.scrollIntoView({ block: "end" });
  }, [history, answer]);
  useEffect(() => () => abort.current?.abort(), []);

  const submit = async () => {
    const text = draft.trim();
    if (!text || !settings.model || abort.current) return;
    const asked: ChatMessage[] = [...history, { role: "user", content: text }];
    setHistory(asked);
    setDraft("");
    setError(null);
    setStats(null);
    setAnswer("");
    const controller = new AbortController();
    abort.current = controller;
    let full = "";
    try {
      const result = await streamChat(settings, asked, (piece) => {
        full += piece;
        setAnswer(full);
      }, controller.signal);
      setStats(result);
    } catch (failure) {
      if (!controller.signal.aborted) setError(describe(failure));
    } finally {
      abort.current = null;
      setHistory((previous) => (full ? [...previous, { role: "assistant", content: full }] : previous));
      setAnswer(null);
    }
  };

  const pending: ChatMessage[] = [...history, ...(answer !== null ? [{ role: "assistant" as const, content: answer || "…" }] : [])];
  const sample = history.length ? history : [{ role: "user" as const, content: draft || "Hello!" }];

  return (
    <Row gutter={16}>
      <Col xs={24} lg={16}>
        <Card
          title={t("menu.chat")}
          extra={
            <Space>
              <Button icon={<CodeOutlined />} onClick={() => setShowCode(true)} disabled={!settings.model} data-testid="view-code">
                {t("playground.code")}
              </Button>
              <Button icon={<ClearOutlined />} onClick={() => setHistory([])} disabled={!!abort.current}>
                {t("playground.clear")}
              </Button>
            </Space>
          }
        >
          <div style={{ height: "calc(100vh - 330px)", minHeight: 240, overflow: "auto", padding: "4px 8px" }} data-testid="chat-messages">
            {pending.length === 0 && <Empty description={t("playground.empty")} />}
            {pending.map((message, index) => (
              <div key={index} style={{ display: "flex", justifyContent: message.role === "user" ? "flex-end" : "flex-start", margin: "8px 0" }}>
                <div
                  data-testid={`message-${message.role}`}
                  style={{
                    maxWidth: "80%",
                    whiteSpace: "pre-wrap",
                    padding: "8px 12px",
                    borderRadius: 8,
                    background: message.role === "user" ? "#1677ff" : "#f0f2f5",
                    color: message.role === "user" ? "#fff" : "inherit",
                  }}
                >
                  {message.content}
                </div>
              </div>
            ))}
            <div ref={bottom} />
          </div>
          {error && <Alert type="error" showIcon message={error} style={{ margin: "8px 0" }} data-testid="chat-error" />}
          {stats && (
            <Typography.Text type="secondary" style={{ fontSize: 12 }} data-testid="chat-stats">
              {t("playground.stats", {
                chunks: stats.chunks,
                first: Math.round(stats.firstTokenMs ?? 0),
                total: (stats.totalMs / 1000).toFixed(1),
              })}
            </Typography.Text>
          )}
          <Space.Compact style={{ width: "100%", marginTop: 8 }}>
            <Input.TextArea
              value={draft}
              onChange={(e) => setDraft(e.target.value)}
              autoSize={{ minRows: 1, maxRows: 6 }}
              placeholder={t("playground.placeholder")}
              data-testid="chat-input"
              onPressEnter={(e) => {
                if (!e.shiftKey) {
                  e.preventDefault();
                  void submit();
                }
              }}
            />
            {abort.current ? (
              <Button icon={<StopOutlined />} onClick={() => abort.current?.abort()} data-testid="chat-stop">
                {t("playground.stop")}
              </Button>
            ) : (
              <Button type="primary" icon={<SendOutlined />} onClick={() => void submit()} disabled={!settings.model} data-testid="chat-send">
                {t("playground.send")}
              </Button>
            )}
          </Space.Compact>
        </Card>
      </Col>
      <Col xs={24} lg={8}>
        <Card title={t("playground.settings")}>
          <Form layout="vertical">
            <Form.Item label={t("playground.model")}>
              <ModelPicker value={settings.model} onChange={setModel} />
            </Form.Item>
            <Form.Item label={t("playground.system")}>
              <Input.TextArea
                value={settings.system}
                onChange={(e) => update({ system: e.target.value })}
                autoSize={{ minRows: 2, maxRows: 8 }}
                data-testid="system-prompt"
                placeholder={t("playground.systemPlaceholder")}
              />
            </Form.Item>
            <Form.Item label={`${t("playground.temperature")}: ${settings.temperature}`}>
              <Slider min={0} max={2} step={0.05} value={settings.temperature} onChange={(v) => update({ temperature: v })} />
            </Form.Item>
            <Form.Item label={t("playground.maxTokens")}>
              <InputNumber
                min={1}
                max={131072}
                value={settings.max_tokens}
                onChange={(v) => update({ max_tokens: v })}
                style={{ width: "100%" }}
                data-testid="max-tokens"
              />
            </Form.Item>
            <Form.Item label={`Top P: ${settings.top_p}`}>
              <Slider min={0} max={1} step={0.05} value={settings.top_p} onChange={(v) => update({ top_p: v })} />
            </Form.Item>
          </Form>
        </Card>
      </Col>
      <CodeModal
        open={showCode}
        onClose={() => setShowCode(false)}
        curl={curlCode("chat/completions", chatBody(settings, sample, true))}
        python={pythonChatCode(settings, sample)}
      />
    </Row>
  );
}
