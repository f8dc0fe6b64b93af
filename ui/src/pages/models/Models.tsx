// Deployed models with their instances beneath: replicas ready/total, each instance's state (its reason on
// hover), logs, start/stop, edit and delete. Kept live by the watch streams; a page of models at a time.

import {
  DeleteOutlined,
  EditOutlined,
  FileTextOutlined,
  PauseCircleOutlined,
  PlayCircleOutlined,
  PlusOutlined,
  ReloadOutlined,
} from "@ant-design/icons";
import { Alert, App, Button, Card, Input, Popconfirm, Space, Table, Tag, Tooltip, Typography } from "antd";
import { useMemo, useState } from "react";
import { useNavigate } from "react-router";
import { del, describe, put } from "../../api/http";
import type { Model, ModelInstance } from "../../api/types";
import StateTag from "../../components/StateTag";
import { useT } from "../../i18n";
import { useLive } from "../../live/collection";
import { instances as liveInstances, models as liveModels } from "../../live/resources";
import { bytes, dateTime } from "../../util/format";
import LogsDrawer from "./LogsDrawer";
import { sourceSummary } from "../deploy/sources";

const STOPPED_KEY = "gpustack.replicas-before-stop";

function remembered(): Record<string, number> {
  try {
    return JSON.parse(localStorage.getItem(STOPPED_KEY) ?? "{}");
  } catch {
    return {};
  }
}

function InstanceTable({ rows, onLogs }: { rows: ModelInstance[]; onLogs: (i: ModelInstance) => void }) {
  const t = useT();
  const { message } = App.useApp();
  return (
    <Table<ModelInstance>
      size="small"
      rowKey="id"
      dataSource={rows}
      pagination={rows.length > 20 ? { pageSize: 20, size: "small" } : false}
      locale={{ emptyText: t("models.noInstances") }}
      columns={[
        { title: t("models.instance"), dataIndex: "name" },
        {
          title: t("models.worker"),
          render: (_, row) =>
            row.worker_name ? (
              <>
                {row.worker_name} <Typography.Text type="secondary">{row.worker_ip}{row.port ? `:${row.port}` : ""}</Typography.Text>
              </>
            ) : (
              "-"
            ),
        },
        {
          title: t("models.gpus"),
          render: (_, row) => {
            const claim = row.computed_resource_claim;
            const gpus = row.gpu_indexes.length ? row.gpu_indexes.map((i) => `GPU ${i}`).join(", ") : t("models.cpu");
            const vram = claim ? Object.values(claim.vram ?? {}).reduce((a, b) => a + b, 0) : 0;
            return (
              <Tooltip title={claim ? `RAM ${bytes(claim.ram)}, VRAM ${bytes(vram)}` : undefined}>
                {gpus}
                {row.subordinate_workers.length > 0 && ` + ${row.subordinate_workers.map((s) => s.worker_name).join(", ")}`}
              </Tooltip>
            );
          },
        },
        {
          title: t("models.state"),
          render: (_, row) => (
            <Space size={4}>
              <StateTag state={row.state} message={row.state_message} testId={`instance-state-${row.name}`} />
              {row.restart_count > 0 && (
                <Tooltip title={t("models.restarts", { n: row.restart_count })}>
                  <Tag icon={<ReloadOutlined />}>{row.restart_count}</Tag>
                </Tooltip>
              )}
            </Space>
          ),
        },
        { title: t("common.created"), render: (_, row) => dateTime(row.created_at) },
        {
          title: t("common.actions"),
          render: (_, row) => (
            <Space>
              <Tooltip title={t("models.logs")}>
                <Button size="small" icon={<FileTextOutlined />} onClick={() => onLogs(row)} data-testid={`logs-${row.name}`} />
              </Tooltip>
              <Popconfirm
                title={t("models.recreateConfirm")}
                onConfirm={async () => {
                  try {
                    await del(`/v2/model-instances/${row.id}`);
                  } catch (error) {
                    message.error(describe(error));
                  }
                }}
              >
                <Tooltip title={t("models.recreate")}>
                  <Button size="small" icon={<ReloadOutlined />} />
                </Tooltip>
              </Popconfirm>
            </Space>
          ),
        },
      ]}
    />
  );
}

export default function Models() {
  const t = useT();
  const navigate = useNavigate();
  const { message, modal } = App.useApp();
  const models = useLive(liveModels);
  const instances = useLive(liveInstances);
  const [search, setSearch] = useState("");
  const [collapsed, setCollapsed] = useState<Set<number>>(new Set());
  const [logs, setLogs] = useState<ModelInstance | null>(null);

  const byModel = useMemo(() => {
    const groups = new Map<number, ModelInstance[]>();
    for (const instance of instances.items) {
      const list = groups.get(instance.model_id);
      if (list) list.push(instance);
      else groups.set(instance.model_id, [instance]);
    }
    return groups;
  }, [instances]);

  const shown = useMemo(() => {
    const needle = search.trim().toLowerCase();
    return needle ? models.items.filter((m) => m.name.toLowerCase().includes(needle)) : models.items;
  }, [models, search]);

  const setReplicas = async (model: Model, replicas: number) => {
    try {
      if (replicas === 0) {
        localStorage.setItem(STOPPED_KEY, JSON.stringify({ ...remembered(), [model.id]: model.replicas }));
      }
      await put(`/v2/models/${model.id}`, { replicas });
    } catch (error) {
      message.error(describe(error));
    }
  };

  const remove = (model: Model) =>
    modal.confirm({
      title: t("models.deleteTitle", { name: model.name }),
      content: t("models.deleteContent"),
      okText: t("common.delete"),
      okButtonProps: { danger: true, "data-testid": "confirm-delete" } as never,
      onOk: async () => {
        try {
          await del(`/v2/models/${model.id}`);
          message.success(t("models.deleted", { name: model.name }));
        } catch (error) {
          message.error(describe(error));
          throw error;
        }
      },
    });

  const error = models.state === "error" ? models.error : instances.state === "error" ? instances.error : undefined;

  return (
    <Card
      title={t("menu.models")}
      extra={
        <Space>
          <Input.Search allowClear placeholder={t("common.search")} onChange={(e) => setSearch(e.target.value)} style={{ width: 220 }} />
          <Button type="primary" icon={<PlusOutlined />} onClick={() => navigate("/models/deploy")} data-testid="deploy-model">
            {t("models.deploy")}
          </Button>
        </Space>
      }
    >
      {error && <Alert type="warning" showIcon message={t("common.liveError", { error })} style={{ marginBottom: 12 }} />}
      <Table<Model>
        rowKey="id"
        dataSource={shown}
        loading={models.state === "connecting"}
        pagination={{ defaultPageSize: 10, showSizeChanger: true, hideOnSinglePage: true, showTotal: (n) => t("common.total", { n }) }}
        expandable={{
          expandedRowKeys: shown.filter((m) => !collapsed.has(m.id)).map((m) => m.id),
          onExpand: (open, model) =>
            setCollapsed((previous) => {
              const next = new Set(previous);
              if (open) next.delete(model.id);
              else next.add(model.id);
              return next;
            }),
          expandedRowRender: (model) => <InstanceTable rows={byModel.get(model.id) ?? []} onLogs={setLogs} />,
        }}
        columns={[
          {
            title: t("models.name"),
            render: (_, model) => (
              <Space direction="vertical" size={0}>
                <Typography.Text strong data-testid={`model-${model.name}`}>{model.name}</Typography.Text>
                {model.description && <Typography.Text type="secondary">{model.description}</Typography.Text>}
              </Space>
            ),
          },
          {
            title: t("models.source"),
            render: (_, model) => (
              <Typography.Text ellipsis={{ tooltip: true }} style={{ maxWidth: 320 }}>
                {sourceSummary(model)}
              </Typography.Text>
            ),
          },
          {
            title: t("models.backend"),
            render: (_, model) => (
              <>
                {model.backend}
                {model.backend_version && <Tag style={{ marginLeft: 6 }}>{model.backend_version}</Tag>}
              </>
            ),
          },
          {
            title: t("models.replicas"),
            render: (_, model) => (
              <Tag color={model.replicas > 0 && model.ready_replicas >= model.replicas ? "success" : model.replicas === 0 ? "default" : "processing"}>
                {model.ready_replicas} / {model.replicas}
              </Tag>
            ),
          },
          { title: t("common.created"), render: (_, model) => dateTime(model.created_at) },
          {
            title: t("common.actions"),
            render: (_, model) => (
              <Space>
                <Tooltip title={t("common.edit")}>
                  <Button size="small" icon={<EditOutlined />} onClick={() => navigate(`/models/${model.id}/edit`)} data-testid={`edit-${model.name}`} />
                </Tooltip>
                {model.replicas > 0 ? (
                  <Tooltip title={t("models.stop")}>
                    <Button size="small" icon={<PauseCircleOutlined />} onClick={() => void setReplicas(model, 0)} data-testid={`stop-${model.name}`} />
                  </Tooltip>
                ) : (
                  <Tooltip title={t("models.start")}>
                    <Button
                      size="small"
                      icon={<PlayCircleOutlined />}
                      onClick={() => void setReplicas(model, Math.max(1, remembered()[model.id] ?? 1))}
                      data-testid={`start-${model.name}`}
                    />
                  </Tooltip>
                )}
                <Tooltip title={t("common.delete")}>
                  <Button size="small" danger icon={<DeleteOutlined />} onClick={() => remove(model)} data-testid={`delete-${model.name}`} />
                </Tooltip>
              </Space>
            ),
          },
        ]}
      />
      <LogsDrawer instance={logs} onClose={() => setLogs(null)} />
    </Card>
  );
}
