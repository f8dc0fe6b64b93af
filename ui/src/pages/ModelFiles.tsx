// Resources → Model Files: the files each worker holds, downloads in progress, delete (refused with the
// reason while a model uses them) and retry, as GET /v2/model-files lists them (ModelFilePublic). Models
// deployed from a local path keep no copy in the cache, so they have no row here.

import { DeleteOutlined, RedoOutlined } from "@ant-design/icons";
import { Alert, App, Button, Card, Empty, Popconfirm, Progress, Space, Table, Typography } from "antd";
import { ApiError, del, describe, post } from "../api/http";
import StateTag from "../components/StateTag";
import Unavailable from "../components/Unavailable";
import { useT } from "../i18n";
import { useLive } from "../live/collection";
import { modelFiles as liveFiles, workers as liveWorkers, type ModelFile } from "../live/resources";
import { bytes } from "../util/format";

const SOURCE_KEYS = ["huggingface_repo_id", "huggingface_filename", "model_scope_model_id", "model_scope_file_path", "ollama_library_model_name", "local_path"];

function num(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** Percent done: the worker reports download_progress in percent (0-100); ready files are whole. */
function progressOf(file: ModelFile): number | null {
  if (file.state === "ready") return 100;
  const explicit = num(file.download_progress);
  if (explicit !== null && explicit > 0) return explicit;
  const done = num(file.downloaded_bytes);
  const total = num(file.size);
  return done !== null && total ? (done / total) * 100 : explicit;
}

export default function ModelFiles() {
  const t = useT();
  const { message } = App.useApp();
  const files = useLive(liveFiles);
  const workers = useLive(liveWorkers);
  if (files.state === "unavailable") {
    return (
      <Card title={t("menu.modelFiles")}>
        <Unavailable what="/v2/model-files" />
      </Card>
    );
  }
  const workerName = (file: ModelFile) => {
    if (typeof file.worker_name === "string") return file.worker_name;
    const worker = typeof file.worker_id === "number" ? workers.byId.get(file.worker_id) : undefined;
    return worker?.name ?? (file.worker_id === undefined ? "-" : String(file.worker_id));
  };
  return (
    <Card title={t("menu.modelFiles")}>
      {files.state === "error" && <Alert type="warning" showIcon message={t("common.liveError", { error: files.error ?? "" })} style={{ marginBottom: 12 }} />}
      <Table<ModelFile>
        rowKey="id"
        dataSource={files.items}
        loading={files.state === "connecting"}
        locale={{ emptyText: <Empty data-testid="model-files-empty" description={t("files.empty")} /> }}
        pagination={{ defaultPageSize: 20, showSizeChanger: true, hideOnSinglePage: true }}
        columns={[
          {
            title: t("files.source"),
            render: (_, file) => (
              <Typography.Text ellipsis={{ tooltip: true }} style={{ maxWidth: 360 }}>
                {SOURCE_KEYS.map((key) => file[key]).filter((v) => typeof v === "string" && v).join(" · ") || String(file.source ?? "-")}
              </Typography.Text>
            ),
          },
          { title: t("models.worker"), render: (_, file) => workerName(file) },
          {
            title: t("models.state"),
            render: (_, file) => <StateTag state={String(file.state ?? "-")} message={typeof file.state_message === "string" ? file.state_message : undefined} />,
          },
          { title: t("files.size"), render: (_, file) => bytes(num(file.size)) },
          {
            title: t("files.progress"),
            render: (_, file) => {
              const progress = progressOf(file);
              return progress === null ? "-" : <Progress size="small" percent={Math.round(progress)} style={{ minWidth: 120 }} />;
            },
          },
          {
            title: t("files.models"),
            render: (_, file) => (Array.isArray(file.model_names) ? file.model_names.join(", ") : "") || "-",
          },
          {
            title: t("files.paths"),
            render: (_, file) => (
              <Typography.Text type="secondary" style={{ fontSize: 12 }}>
                {(Array.isArray(file.resolved_paths) ? file.resolved_paths : []).join("\n")}
              </Typography.Text>
            ),
          },
          {
            title: t("common.actions"),
            render: (_, file) => (
              <Space>
                {file.state === "error" && (
                  <Button
                    size="small"
                    icon={<RedoOutlined />}
                    onClick={async () => {
                      try {
                        await post(`/v2/model-files/${file.id}/retry`);
                      } catch (error) {
                        message.error(error instanceof ApiError && error.status === 404 ? t("files.noRetry") : describe(error));
                      }
                    }}
                  >
                    {t("files.retry")}
                  </Button>
                )}
                <Popconfirm
                  title={t("files.deleteConfirm")}
                  onConfirm={async () => {
                    try {
                      await del(`/v2/model-files/${file.id}`);
                    } catch (error) {
                      message.error(describe(error));
                    }
                  }}
                >
                  <Button size="small" danger icon={<DeleteOutlined />} />
                </Popconfirm>
              </Space>
            ),
          },
        ]}
      />
    </Card>
  );
}
