// API keys: create one (its value is shown once, with a copy button), see when each expires, delete.

import { DeleteOutlined, PlusOutlined } from "@ant-design/icons";
import { Alert, App, Button, Card, Form, Input, Modal, Popconfirm, Select, Space, Table, Tag, Typography } from "antd";
import { useState } from "react";
import { del, describe, post } from "../api/http";
import type { ApiKey } from "../api/types";
import CodeBlock from "../components/CodeBlock";
import { useT } from "../i18n";
import { dateTime } from "../util/format";
import { usePaged } from "../util/usePaged";

const DAY = 86400;
const EXPIRY = [0, 1, 7, 30, 90, 180, 365];

export default function ApiKeys() {
  const t = useT();
  const { message } = App.useApp();
  const keys = usePaged<ApiKey>("/v2/api-keys");
  const [creating, setCreating] = useState(false);
  const [created, setCreated] = useState<(ApiKey & { value: string }) | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [form] = Form.useForm<{ name: string; description?: string; days: number }>();

  const create = async () => {
    const values = await form.validateFields();
    setBusy(true);
    setError(null);
    try {
      const key = await post<ApiKey & { value: string }>("/v2/api-keys", {
        name: values.name.trim(),
        description: values.description ?? "",
        expires_in: values.days ? values.days * DAY : null,
      });
      setCreating(false);
      form.resetFields();
      setCreated(key);
      void keys.reload();
    } catch (failure) {
      setError(describe(failure));
    } finally {
      setBusy(false);
    }
  };

  const now = Date.now();
  return (
    <Card
      title={t("menu.apiKeys")}
      extra={
        <Button type="primary" icon={<PlusOutlined />} onClick={() => setCreating(true)} data-testid="new-api-key">
          {t("keys.create")}
        </Button>
      }
    >
      {keys.error && <Alert type="error" showIcon message={keys.error} style={{ marginBottom: 12 }} />}
      <Table<ApiKey>
        rowKey="id"
        dataSource={keys.items}
        loading={keys.loading}
        pagination={keys.pagination}
        columns={[
          { title: t("keys.name"), dataIndex: "name" },
          { title: t("deploy.description"), dataIndex: "description" },
          { title: t("keys.prefix"), render: (_, key) => <Typography.Text code>gpustack_{key.access_key}_…</Typography.Text> },
          {
            title: t("keys.expires"),
            render: (_, key) =>
              key.expires_at === null ? (
                <Tag>{t("keys.never")}</Tag>
              ) : new Date(key.expires_at).getTime() <= now ? (
                <Tag color="error">{t("keys.expired")}</Tag>
              ) : (
                dateTime(key.expires_at)
              ),
          },
          { title: t("common.created"), render: (_, key) => dateTime(key.created_at) },
          {
            title: t("common.actions"),
            render: (_, key) => (
              <Popconfirm
                title={t("keys.deleteConfirm", { name: key.name })}
                onConfirm={async () => {
                  try {
                    await del(`/v2/api-keys/${key.id}`);
                    void keys.reload();
                  } catch (failure) {
                    message.error(describe(failure));
                  }
                }}
              >
                <Button size="small" danger icon={<DeleteOutlined />} />
              </Popconfirm>
            ),
          },
        ]}
      />
      <Modal
        open={creating}
        title={t("keys.create")}
        onCancel={() => setCreating(false)}
        onOk={create}
        confirmLoading={busy}
        okButtonProps={{ "data-testid": "create-api-key" } as never}
      >
        <Form form={form} layout="vertical" initialValues={{ days: 0 }}>
          <Form.Item name="name" label={t("keys.name")} rules={[{ required: true, whitespace: true, max: 255 }]}>
            <Input data-testid="api-key-name" />
          </Form.Item>
          <Form.Item name="description" label={t("deploy.description")}>
            <Input />
          </Form.Item>
          <Form.Item name="days" label={t("keys.expiry")}>
            <Select options={EXPIRY.map((days) => ({ value: days, label: days ? t("keys.days", { n: days }) : t("keys.never") }))} />
          </Form.Item>
        </Form>
        {error && <Alert type="error" showIcon message={error} />}
      </Modal>
      <Modal
        open={created !== null}
        title={t("keys.createdTitle", { name: created?.name ?? "" })}
        onCancel={() => setCreated(null)}
        footer={
          <Button type="primary" onClick={() => setCreated(null)} data-testid="close-api-key">
            {t("common.done")}
          </Button>
        }
      >
        <Space direction="vertical" style={{ width: "100%" }}>
          <Alert type="warning" showIcon message={t("keys.shownOnce")} />
          <CodeBlock code={created?.value ?? ""} testId="api-key-value" />
        </Space>
      </Modal>
    </Card>
  );
}
