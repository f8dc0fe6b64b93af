// Users (administrators only): create, change role, reset a password, delete.

import { DeleteOutlined, EditOutlined, KeyOutlined, PlusOutlined } from "@ant-design/icons";
import { Alert, App, Button, Card, Checkbox, Form, Input, Modal, Popconfirm, Space, Table, Tag, Tooltip } from "antd";
import { useEffect, useState } from "react";
import { del, describe, post, put } from "../api/http";
import type { User } from "../api/types";
import { useAuth } from "../auth/AuthProvider";
import { useT } from "../i18n";
import { dateTime } from "../util/format";
import { usePaged } from "../util/usePaged";

type Mode = { kind: "create" } | { kind: "edit"; user: User } | { kind: "password"; user: User } | null;

interface Values {
  username?: string;
  full_name?: string;
  password?: string;
  is_admin?: boolean;
  require_password_change?: boolean;
}

export default function Users() {
  const t = useT();
  const { message } = App.useApp();
  const { user: me } = useAuth();
  const users = usePaged<User>("/v2/users");
  const [mode, setMode] = useState<Mode>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [form] = Form.useForm<Values>();

  useEffect(() => {
    setError(null);
    form.resetFields();
    if (mode?.kind === "edit") form.setFieldsValue(mode.user);
    if (mode?.kind === "password") form.setFieldsValue({ require_password_change: true });
  }, [mode, form]);

  const save = async () => {
    const values = await form.validateFields();
    setBusy(true);
    setError(null);
    try {
      if (mode?.kind === "create") {
        await post("/v2/users", { ...values, full_name: values.full_name ?? "", is_admin: !!values.is_admin, require_password_change: !!values.require_password_change });
      } else if (mode?.kind === "edit") {
        await put(`/v2/users/${mode.user.id}`, { full_name: values.full_name ?? "", is_admin: !!values.is_admin, require_password_change: !!values.require_password_change });
      } else if (mode?.kind === "password") {
        await put(`/v2/users/${mode.user.id}`, { password: values.password, require_password_change: !!values.require_password_change });
      }
      message.success(t("common.saved"));
      setMode(null);
      void users.reload();
    } catch (failure) {
      setError(describe(failure));
    } finally {
      setBusy(false);
    }
  };

  const passwordRule = { required: true, min: 8, message: t("profile.tooShort", { n: 8 }) };
  return (
    <Card
      title={t("menu.users")}
      extra={
        <Button type="primary" icon={<PlusOutlined />} onClick={() => setMode({ kind: "create" })} data-testid="new-user">
          {t("users.create")}
        </Button>
      }
    >
      {users.error && <Alert type="error" showIcon message={users.error} style={{ marginBottom: 12 }} />}
      <Table<User>
        rowKey="id"
        dataSource={users.items}
        loading={users.loading}
        pagination={users.pagination}
        columns={[
          { title: t("login.username"), dataIndex: "username" },
          { title: t("users.fullName"), dataIndex: "full_name" },
          {
            title: t("users.role"),
            render: (_, u) => (u.is_admin ? <Tag color="blue">{t("users.admin")}</Tag> : <Tag>{t("users.user")}</Tag>),
          },
          { title: t("users.mustChange"), render: (_, u) => (u.require_password_change ? <Tag color="warning">{t("common.yes")}</Tag> : "") },
          { title: t("common.created"), render: (_, u) => dateTime(u.created_at) },
          {
            title: t("common.actions"),
            render: (_, u) => (
              <Space>
                <Tooltip title={t("common.edit")}>
                  <Button size="small" icon={<EditOutlined />} onClick={() => setMode({ kind: "edit", user: u })} />
                </Tooltip>
                <Tooltip title={t("users.resetPassword")}>
                  <Button size="small" icon={<KeyOutlined />} onClick={() => setMode({ kind: "password", user: u })} />
                </Tooltip>
                <Popconfirm
                  title={t("users.deleteConfirm", { name: u.username })}
                  disabled={u.id === me?.id}
                  onConfirm={async () => {
                    try {
                      await del(`/v2/users/${u.id}`);
                      void users.reload();
                    } catch (failure) {
                      message.error(describe(failure));
                    }
                  }}
                >
                  <Button size="small" danger icon={<DeleteOutlined />} disabled={u.id === me?.id} />
                </Popconfirm>
              </Space>
            ),
          },
        ]}
      />
      <Modal
        open={mode !== null}
        onCancel={() => setMode(null)}
        onOk={save}
        confirmLoading={busy}
        title={
          mode?.kind === "create"
            ? t("users.create")
            : mode?.kind === "password"
              ? t("users.resetFor", { name: mode.user.username })
              : t("users.editFor", { name: mode?.user.username ?? "" })
        }
      >
        <Form form={form} layout="vertical">
          {mode?.kind === "create" && (
            <Form.Item name="username" label={t("login.username")} rules={[{ required: true, whitespace: true }]}>
              <Input />
            </Form.Item>
          )}
          {mode?.kind !== "password" && (
            <Form.Item name="full_name" label={t("users.fullName")}>
              <Input />
            </Form.Item>
          )}
          {mode?.kind !== "edit" && (
            <Form.Item name="password" label={t("login.password")} rules={[passwordRule]}>
              <Input.Password autoComplete="new-password" />
            </Form.Item>
          )}
          {mode?.kind !== "password" && (
            <Form.Item name="is_admin" valuePropName="checked">
              <Checkbox>{t("users.admin")}</Checkbox>
            </Form.Item>
          )}
          <Form.Item name="require_password_change" valuePropName="checked">
            <Checkbox>{t("users.mustChange")}</Checkbox>
          </Form.Item>
        </Form>
        {error && <Alert type="error" showIcon message={error} />}
      </Modal>
    </Card>
  );
}
