// Playground → Embeddings: embed a few texts with a running model, see their dimensions and how similar
// they are to each other (cosine), and the same request as code.

import { CodeOutlined, ThunderboltOutlined } from "@ant-design/icons";
import { Alert, Button, Card, Col, Form, Input, Row, Space, Table, Typography } from "antd";
import { useCallback, useState } from "react";
import { describe, post } from "../../api/http";
import { useT } from "../../i18n";
import CodeModal from "./CodeModal";
import ModelPicker from "./ModelPicker";
import { curlCode, pythonEmbeddingsCode } from "./openai";

interface Embedding {
  index: number;
  embedding: number[];
}

function cosine(a: number[], b: number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

export default function Embeddings() {
  const t = useT();
  const [model, setModelState] = useState("");
  const setModel = useCallback((value: string) => setModelState(value), []);
  const [text, setText] = useState("The cat sat on the mat.\nA kitten is sitting on a rug.\nGPUs run models fast.");
  const [result, setResult] = useState<Embedding[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [showCode, setShowCode] = useState(false);
  const inputs = text.split("\n").map((line) => line.trim()).filter(Boolean);

  const run = async () => {
    setBusy(true);
    setError(null);
    try {
      const body = await post<{ data: Embedding[] }>("/v1/embeddings", { model, input: inputs });
      setResult(body.data);
    } catch (failure) {
      setResult(null);
      setError(describe(failure));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Row gutter={16}>
      <Col xs={24} lg={10}>
        <Card title={t("menu.embeddings")}>
          <Form layout="vertical">
            <Form.Item label={t("playground.model")}>
              <ModelPicker value={model} onChange={setModel} />
            </Form.Item>
            <Form.Item label={t("playground.inputs")} extra={t("playground.inputsHelp")}>
              <Input.TextArea value={text} onChange={(e) => setText(e.target.value)} autoSize={{ minRows: 4, maxRows: 14 }} data-testid="embedding-input" />
            </Form.Item>
            <Space>
              <Button type="primary" icon={<ThunderboltOutlined />} loading={busy} disabled={!model || !inputs.length} onClick={() => void run()} data-testid="embed">
                {t("playground.embed")}
              </Button>
              <Button icon={<CodeOutlined />} disabled={!model} onClick={() => setShowCode(true)}>
                {t("playground.code")}
              </Button>
            </Space>
          </Form>
          <Typography.Paragraph type="secondary" style={{ marginTop: 16, fontSize: 12 }}>
            {t("playground.embeddingsNote")}
          </Typography.Paragraph>
        </Card>
      </Col>
      <Col xs={24} lg={14}>
        <Card title={t("playground.result")}>
          {error && <Alert type="error" showIcon message={error} data-testid="embedding-error" />}
          {result && (
            <Space direction="vertical" style={{ width: "100%" }} data-testid="embedding-result">
              <Typography.Text>{t("playground.dimensions", { n: result[0]?.embedding.length ?? 0 })}</Typography.Text>
              <Table
                size="small"
                pagination={false}
                rowKey="index"
                dataSource={result}
                columns={[
                  { title: "#", dataIndex: "index" },
                  { title: t("playground.text"), render: (_, row: Embedding) => inputs[row.index] },
                  ...result.map((other) => ({
                    title: `#${other.index}`,
                    render: (_: unknown, row: Embedding) => cosine(row.embedding, other.embedding).toFixed(3),
                  })),
                ]}
              />
            </Space>
          )}
        </Card>
      </Col>
      <CodeModal
        open={showCode}
        onClose={() => setShowCode(false)}
        curl={curlCode("embeddings", { model, input: inputs })}
        python={pythonEmbeddingsCode(model, inputs)}
      />
    </Row>
  );
}
