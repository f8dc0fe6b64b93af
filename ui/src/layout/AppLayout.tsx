// The frame around every page: the menu, the language switch and the user's menu.

import {
  ApiOutlined,
  AppstoreOutlined,
  BookOutlined,
  ClusterOutlined,
  DashboardOutlined,
  DownOutlined,
  KeyOutlined,
  LogoutOutlined,
  MessageOutlined,
  TeamOutlined,
  UserOutlined,
} from "@ant-design/icons";
import { Button, Dropdown, Layout, Menu, Space, Typography, type MenuProps } from "antd";
import type { ReactNode } from "react";
import { useLocation, useNavigate } from "react-router";
import { useAuth } from "../auth/AuthProvider";
import LanguageSwitch from "../components/LanguageSwitch";
import { useI18n } from "../i18n";

const { Header, Sider, Content } = Layout;

export default function AppLayout({ children }: { children: ReactNode }) {
  const { t } = useI18n();
  const { user, logout } = useAuth();
  const navigate = useNavigate();
  const location = useLocation();

  const admin: MenuProps["items"] = user?.is_admin
    ? [
        { key: "/dashboard", icon: <DashboardOutlined />, label: t("menu.dashboard") },
        { key: "/models", icon: <AppstoreOutlined />, label: t("menu.models") },
        { key: "/catalog", icon: <BookOutlined />, label: t("menu.catalog") },
        {
          key: "resources",
          icon: <ClusterOutlined />,
          label: t("menu.resources"),
          children: [
            { key: "/resources/workers", label: t("menu.workers") },
            { key: "/resources/model-files", label: t("menu.modelFiles") },
          ],
        },
      ]
    : [];
  const items: MenuProps["items"] = [
    ...admin!,
    {
      key: "playground",
      icon: <MessageOutlined />,
      label: t("menu.playground"),
      children: [
        { key: "/playground", label: t("menu.chat") },
        { key: "/playground/embeddings", label: t("menu.embeddings") },
      ],
    },
    { key: "/api-keys", icon: <KeyOutlined />, label: t("menu.apiKeys") },
    ...(user?.is_admin ? [{ key: "/users", icon: <TeamOutlined />, label: t("menu.users") }] : []),
  ];
  const selected = location.pathname.startsWith("/models") ? "/models" : location.pathname;

  return (
    <Layout style={{ minHeight: "100vh" }}>
      <Sider width={220} theme="light" breakpoint="lg" collapsedWidth={0} style={{ borderRight: "1px solid #f0f0f0" }}>
        <div style={{ height: 56, display: "flex", alignItems: "center", padding: "0 20px", gap: 10 }}>
          <img src="/favicon.svg" width={26} height={26} alt="" />
          <Typography.Text strong style={{ fontSize: 18 }}>
            GPUStack
          </Typography.Text>
        </div>
        <Menu
          mode="inline"
          data-testid="main-menu"
          selectedKeys={[selected]}
          defaultOpenKeys={["resources", "playground"]}
          items={items}
          onClick={({ key }) => navigate(key)}
        />
      </Sider>
      <Layout>
        <Header
          style={{
            background: "#fff",
            padding: "0 20px",
            display: "flex",
            justifyContent: "flex-end",
            alignItems: "center",
            borderBottom: "1px solid #f0f0f0",
            height: 56,
          }}
        >
          <Space>
            <LanguageSwitch />
            <Dropdown
              menu={{
                items: [
                  { key: "profile", icon: <UserOutlined />, label: t("menu.profile") },
                  { key: "docs", icon: <ApiOutlined />, label: t("menu.apiDocs") },
                  { type: "divider" },
                  { key: "logout", icon: <LogoutOutlined />, label: t("menu.logout") },
                ],
                onClick: ({ key }) => {
                  if (key === "profile") navigate("/profile");
                  if (key === "docs") window.open("/docs", "_blank", "noopener");
                  if (key === "logout") void logout().then(() => navigate("/login"));
                },
              }}
            >
              <Button type="text" data-testid="user-menu">
                <UserOutlined /> {user?.username} <DownOutlined />
              </Button>
            </Dropdown>
          </Space>
        </Header>
        <Content style={{ padding: 20, background: "#f5f6f8" }}>{children}</Content>
      </Layout>
    </Layout>
  );
}
