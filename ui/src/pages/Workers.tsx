// Resources → Workers: each machine's state (with the reason), labels (editable), address, OS and
// architecture, CPU and memory, and every GPU; and how to add a worker.

import { DeleteOutlined, EditOutlined, MinusCircleOutlined, PlusOutlined } from "@ant-design/icons";
import { Alert, App, Button, Card, Form, Input, Modal, Progress, Space, Table, Tag, Tooltip, Typography } from "antd";
import { useEffect, useMemo, useState } from "react";
import { del, describe, get, patch } from "../api/http";
import type { GPUDevice, Worker, WorkerJoin } from "../api/types";
import CodeBlock from "../components/CodeBlock";
import StateTag from "../components/StateTag";
import { useT } from "../i18n";
import { useLive } from "../live/collection";
import { workers as liveWorkers } from "../live/resources";
import { bytes, dateTime, percent, ratio } from "../util/format";

function Usage({ used, total, label }: { used: number; total: number; label?: string }) {
  return (
    <div style={{ width: 170 }}>
      <Progress size="small" percent={Math.round(ratio(used, total))} />
      <Typography.Text type="secondary" style={{ fontSize: 12 }}>
        {label ?? `${bytes(used)} / ${bytes(total)}`}
      </Typography.Text>
    </div>
  );
}

function GpuList({ gpus }: { gpus: GPUDevice[] }) {
  const t = useT();
  if (!gpus.length) return <Typography.Text type="secondary">{t("workers.noGpu")}</Typography.Text>;
  return (
    <Space direction="vertical" size={6} style={{ width: "100%" }}>
      {gpus.map((gpu) => (
        <div key={gpu.index} data-testid="worker-gpu">
          <Typography.Text>
            {gpu.index}: {gpu.name}
          </Typography.Text>{" "}
          <Tag>{gpu.vendor}</Tag>
          {gpu.virtual && <Tag color="purple">{t("workers.virtual")}</Tag>}
          <Typography.Text type="secondary" style={{ fontSize: 12 }}>
            {t("workers.utilization")} {percent(gpu.core?.utilization_rate)}
            {gpu.temperature !== null && ` · ${gpu.temperature} °C`}
          </Typography.Text>
          <Usage used={gpu.memory.used} total={gpu.memory.total} />
        </div>
      ))}
    </Space>
  );
}

function LabelsEditor({ worker, onClose }: { worker: Worker | null; onClose: () => void }) {
  const t = useT();
  const { message } = App.useApp();
  const [form] = Form.useForm<{ labels: { key: string; value: string }[] }>();
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (worker) {
      setError(null);
      form.setFieldsValue({ labels: Object.entries(worker.labels ?? {}).map(([key, value]) => ({ key, value })) });
    }
  }, [worker, form]);
  return (
    <Modal
      open={worker !== null}
      title={t("workers.editLabels", { name: worker?.name ?? "" })}
      onCancel={onClose}
      okButtonProps={{ "data-testid": "save-labels" } as never}
      onOk={async () => {
        const { labels } = await form.validateFields();
        try {
          await patch(`/v2/workers/${worker!.id}`, {
            labels: Object.fromEntries((labels ?? []).filter((l) => l?.key?.trim()).map((l) => [l.key.trim(), l.value ?? ""])),
          });
          message.success(t("common.saved"));
          onClose();
        } catch (failure) {
          setError(describe(failure));
        }
      }}
    >
      <Typography.Paragraph type="secondary">{t("workers.labelsHelp")}</Typography.Paragraph>
      <Form form={form}>
        <Form.List name="labels">
          {(fields, { add, remove }) => (
            <>
              {fields.map((field) => (
                <Space key={field.key} align="baseline" style={{ display: "flex" }}>
                  <Form.Item name={[field.name, "key"]} rules={[{ required: true, whitespace: true }]}>
                    <Input placeholder="key" data-testid={`label-key-${field.name}`} />
                  </Form.Item>
                  <Form.Item name={[field.name, "value"]}>
                    <Input placeholder="value" data-testid={`label-value-${field.name}`} />
                  </Form.Item>
                  <MinusCircleOutlined onClick={() => remove(field.name)} />
                </Space>
              ))}
              <Button type="dashed" icon={<PlusOutlined />} onClick={() => add({ key: "", value: "" })} data-testid="add-label">
                {t("deploy.addLabel")}
              </Button>
            </>
          )}
        </Form.List>
      </Form>
      {error && <Alert type="error" showIcon message={error} style={{ marginTop: 12 }} />}
    </Modal>
  );
}

function AddWorker({ open, onClose }: { open: boolean; onClose: () => void }) {
  const t = useT();
  const [join, setJoin] = useState<WorkerJoin | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (open) get<WorkerJoin>("/v2/worker-join").then(setJoin, (failure) => setError(describe(failure)));
  }, [open]);
  const local = ["localhost", "127.0.0.1", "[::1]"].includes(window.location.hostname);
  const server = `${window.location.protocol}//${local ? "<server-ip>" : window.location.hostname}${window.location.port ? `:${window.location.port}` : ""}`;
  const command = (join?.command ?? "gpustack start --server-url <server> --token <token>").replace("<server>", server);
  return (
    <Modal open={open} onCancel={onClose} footer={null} width={720} title={t("workers.addTitle")}>
      {error && <Alert type="error" showIcon message={error} />}
      <Typography.Paragraph>{t("workers.addStep1")}</Typography.Paragraph>
      <CodeBlock code={join?.token_file ? `sudo cat ${join.token_file}` : (join?.token_hint ?? "…")} testId="token-location" />
      {join && !join.token_file && <Typography.Paragraph type="secondary">{join.token_hint}</Typography.Paragraph>}
      <Typography.Paragraph style={{ marginTop: 16 }}>{t("workers.addStep2")}</Typography.Paragraph>
      <CodeBlock code={command} testId="join-command" />
      {local && <Alert type="warning" showIcon style={{ marginTop: 12 }} message={t("workers.localAddress")} />}
      <Typography.Paragraph type="secondary" style={{ marginTop: 16 }}>
        {t("workers.addStep3")}
      </Typography.Paragraph>
    </Modal>
  );
}

export default function Workers() {
  const t = useT();
  const { message, modal } = App.useApp();
  const workers = useLive(liveWorkers);
  const [search, setSearch] = useState("");
  const [editing, setEditing] = useState<Worker | null>(null);
  const [adding, setAdding] = useState(false);
  const shown = useMemo(() => {
    const needle = search.trim().toLowerCase();
    if (!needle) return workers.items;
    return workers.items.filter((w) =>
      [w.name, w.hostname, w.ip, ...Object.entries(w.labels ?? {}).map(([k, v]) => `${k}=${v}`)].some((s) => s.toLowerCase().includes(needle)),
    );
  }, [workers, search]);

  return (
    <Card
      title={t("menu.workers")}
      extra={
        <Space>
          <Input.Search allowClear placeholder={t("common.search")} onChange={(e) => setSearch(e.target.value)} style={{ width: 220 }} />
          <Button type="primary" icon={<PlusOutlined />} onClick={() => setAdding(true)} data-testid="add-worker">
            {t("workers.add")}
          </Button>
        </Space>
      }
    >
      {workers.state === "error" && <Alert type="warning" showIcon message={t("common.liveError", { error: workers.error ?? "" })} style={{ marginBottom: 12 }} />}
      <Table<Worker>
        rowKey="id"
        dataSource={shown}
        loading={workers.state === "connecting"}
        scroll={{ x: 1700 }}
        pagination={{ defaultPageSize: 20, showSizeChanger: true, hideOnSinglePage: true, showTotal: (n) => t("common.total", { n }) }}
        columns={[
          {
            title: t("workers.name"),
            fixed: "left",
            width: 170,
            render: (_, w) => (
              <Space direction="vertical" size={0}>
                <Typography.Text strong data-testid={`worker-${w.name}`}>{w.name}</Typography.Text>
                <Typography.Text type="secondary" style={{ fontSize: 12 }}>
                  {w.ip}:{w.port}
                </Typography.Text>
              </Space>
            ),
          },
          { title: t("workers.state"), width: 110, render: (_, w) => <StateTag state={w.state} message={w.state_message} testId={`worker-state-${w.name}`} /> },
          {
            title: t("workers.labels"),
            width: 250,
            render: (_, w) => (
              <Space size={[4, 4]} wrap style={{ maxWidth: 260 }}>
                {Object.entries(w.labels ?? {}).map(([k, v]) => (
                  <Tag key={k}>
                    {k}={v}
                  </Tag>
                ))}
                <Tooltip title={t("workers.editLabelsShort")}>
                  <Button size="small" type="text" icon={<EditOutlined />} onClick={() => setEditing(w)} data-testid={`edit-labels-${w.name}`} />
                </Tooltip>
              </Space>
            ),
          },
          {
            title: t("workers.os"),
            width: 160,
            render: (_, w) => (
              <>
                {w.status?.os?.name} {w.status?.os?.version}
                <br />
                <Typography.Text type="secondary" style={{ fontSize: 12 }}>
                  {w.status?.kernel?.architecture}
                </Typography.Text>
              </>
            ),
          },
          {
            title: "CPU",
            width: 200,
            render: (_, w) => (
              <Usage used={w.status?.cpu?.utilization_rate ?? 0} total={100} label={t("workers.cores", { n: w.status?.cpu?.total ?? 0 })} />
            ),
          },
          { title: "RAM", width: 200, render: (_, w) => <Usage used={w.status?.memory?.used ?? 0} total={w.status?.memory?.total ?? 0} /> },
          { title: "GPU", width: 320, render: (_, w) => <GpuList gpus={w.status?.gpu_devices ?? []} /> },
          { title: t("workers.heartbeat"), width: 180, render: (_, w) => dateTime(w.last_heartbeat_at) },
          {
            title: t("common.actions"),
            width: 90,
            render: (_, w) => (
              <Button
                size="small"
                danger
                icon={<DeleteOutlined />}
                onClick={() =>
                  modal.confirm({
                    title: t("workers.deleteTitle", { name: w.name }),
                    content: t("workers.deleteContent"),
                    okButtonProps: { danger: true },
                    onOk: async () => {
                      try {
                        await del(`/v2/workers/${w.id}`);
                      } catch (failure) {
                        message.error(describe(failure));
                        throw failure;
                      }
                    },
                  })
                }
              />
            ),
          },
        ]}
      />
      <LabelsEditor worker={editing} onClose={() => setEditing(null)} />
      <AddWorker open={adding} onClose={() => setAdding(false)} />
    </Card>
  );
}
