// The logged-in user: who they are, and changing their password (which ends their other sessions).

import { Alert, App, Button, Card, Descriptions, Form, Input, Tag } from "antd";
import { useState } from "react";
import { describe } from "../api/http";
import { useAuth } from "../auth/AuthProvider";
import { useT } from "../i18n";
import { dateTime } from "../util/format";

export default function Profile() {
  const t = useT();
  const { message } = App.useApp();
  const { user, changePassword } = useAuth();
  const [form] = Form.useForm<{ current: string; password: string; confirm: string }>();
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <Card title={t("menu.profile")} style={{ maxWidth: 640 }}>
      <Descriptions column={1} bordered size="small" style={{ marginBottom: 24 }}>
        <Descriptions.Item label={t("login.username")}>{user?.username}</Descriptions.Item>
        <Descriptions.Item label={t("users.fullName")}>{user?.full_name || "-"}</Descriptions.Item>
        <Descriptions.Item label={t("users.role")}>
          {user?.is_admin ? <Tag color="blue">{t("users.admin")}</Tag> : <Tag>{t("users.user")}</Tag>}
        </Descriptions.Item>
        <Descriptions.Item label={t("common.created")}>{dateTime(user?.created_at)}</Descriptions.Item>
      </Descriptions>
      <Form
        form={form}
        layout="vertical"
        onFinish={async (values) => {
          setBusy(true);
          setError(null);
          try {
            await changePassword(values.current, values.password);
            form.resetFields();
            message.success(t("profile.changed"));
          } catch (failure) {
            setError(describe(failure));
          } finally {
            setBusy(false);
          }
        }}
      >
        <Form.Item name="current" label={t("profile.current")} rules={[{ required: true }]}>
          <Input.Password autoComplete="current-password" />
        </Form.Item>
        <Form.Item name="password" label={t("profile.new")} rules={[{ required: true, min: 8, message: t("profile.tooShort", { n: 8 }) }]}>
          <Input.Password autoComplete="new-password" />
        </Form.Item>
        <Form.Item
          name="confirm"
          label={t("profile.confirm")}
          dependencies={["password"]}
          rules={[
            { required: true },
            ({ getFieldValue }) => ({
              validator: (_, value) =>
                !value || value === getFieldValue("password") ? Promise.resolve() : Promise.reject(new Error(t("profile.mismatch"))),
            }),
          ]}
        >
          <Input.Password autoComplete="new-password" />
        </Form.Item>
        {error && <Alert type="error" showIcon message={error} style={{ marginBottom: 16 }} />}
        <Button type="primary" htmlType="submit" loading={busy}>
          {t("profile.change")}
        </Button>
      </Form>
    </Card>
  );
}
