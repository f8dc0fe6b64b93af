// Logging in, and the change of a password nobody chose (the first admin's, or one an admin reset).

import { LockOutlined, UserOutlined } from "@ant-design/icons";
import { Alert, Button, Card, Form, Input, Typography } from "antd";
import { useState } from "react";
import { describe } from "../api/http";
import { useAuth } from "../auth/AuthProvider";
import { useT } from "../i18n";
import LanguageSwitch from "../components/LanguageSwitch";

const MIN_PASSWORD = 8;

function Frame({ title, children }: { title: string; children: React.ReactNode }) {
  return (
    <div style={{ minHeight: "100vh", background: "#f5f6f8", display: "flex", flexDirection: "column" }}>
      <div style={{ display: "flex", justifyContent: "flex-end", padding: 12 }}>
        <LanguageSwitch />
      </div>
      <div style={{ flex: 1, display: "flex", alignItems: "center", justifyContent: "center" }}>
        <Card style={{ width: 400 }}>
          <div style={{ textAlign: "center", marginBottom: 20 }}>
            <img src="/favicon.svg" width={44} height={44} alt="" />
            <Typography.Title level={3} style={{ margin: "8px 0 0" }}>
              {title}
            </Typography.Title>
          </div>
          {children}
        </Card>
      </div>
    </div>
  );
}

function ChangePassword() {
  const t = useT();
  const { changePassword, typedPassword, logout } = useAuth();
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <Frame title={t("login.changeTitle")}>
      <Alert type="info" showIcon message={t("login.changeReason")} style={{ marginBottom: 16 }} />
      <Form
        layout="vertical"
        onFinish={async (values: { current?: string; password: string }) => {
          setBusy(true);
          setError(null);
          try {
            await changePassword(values.current ?? typedPassword ?? "", values.password);
          } catch (failure) {
            setError(describe(failure));
          } finally {
            setBusy(false);
          }
        }}
      >
        {!typedPassword && (
          <Form.Item name="current" label={t("profile.current")} rules={[{ required: true }]}>
            <Input.Password autoComplete="current-password" />
          </Form.Item>
        )}
        <Form.Item
          name="password"
          label={t("profile.new")}
          rules={[{ required: true, min: MIN_PASSWORD, message: t("profile.tooShort", { n: MIN_PASSWORD }) }]}
        >
          <Input.Password autoComplete="new-password" data-testid="new-password" />
        </Form.Item>
        <Form.Item
          name="confirm"
          label={t("profile.confirm")}
          dependencies={["password"]}
          rules={[
            { required: true },
            ({ getFieldValue }) => ({
              validator: (_, value) =>
                !value || value === getFieldValue("password")
                  ? Promise.resolve()
                  : Promise.reject(new Error(t("profile.mismatch"))),
            }),
          ]}
        >
          <Input.Password autoComplete="new-password" data-testid="confirm-password" />
        </Form.Item>
        {error && <Alert type="error" showIcon message={error} style={{ marginBottom: 16 }} />}
        <Button type="primary" htmlType="submit" block loading={busy} data-testid="change-password">
          {t("login.changeSubmit")}
        </Button>
        <Button type="link" block onClick={() => void logout()}>
          {t("menu.logout")}
        </Button>
      </Form>
    </Frame>
  );
}

export default function Login() {
  const t = useT();
  const { status, login } = useAuth();
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  if (status === "needs-password") return <ChangePassword />;
  return (
    <Frame title="GPUStack">
      <Form
        layout="vertical"
        onFinish={async (values: { username: string; password: string }) => {
          setBusy(true);
          setError(null);
          try {
            await login(values.username, values.password);
          } catch (failure) {
            setError(describe(failure));
          } finally {
            setBusy(false);
          }
        }}
      >
        <Form.Item name="username" label={t("login.username")} rules={[{ required: true }]}>
          <Input prefix={<UserOutlined />} autoComplete="username" autoFocus data-testid="username" />
        </Form.Item>
        <Form.Item name="password" label={t("login.password")} rules={[{ required: true }]}>
          <Input.Password prefix={<LockOutlined />} autoComplete="current-password" data-testid="password" />
        </Form.Item>
        {error && <Alert type="error" showIcon message={error} style={{ marginBottom: 16 }} data-testid="login-error" />}
        <Button type="primary" htmlType="submit" block loading={busy} data-testid="login">
          {t("login.submit")}
        </Button>
        <Typography.Paragraph type="secondary" style={{ marginTop: 16, fontSize: 12 }}>
          {t("login.firstTime")}
        </Typography.Paragraph>
      </Form>
    </Frame>
  );
}
