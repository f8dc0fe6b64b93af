// English / 简体中文, remembered in this browser.

import { GlobalOutlined } from "@ant-design/icons";
import { Button, Dropdown } from "antd";
import { LANGS, useI18n } from "../i18n";

export default function LanguageSwitch() {
  const { lang, setLang } = useI18n();
  const current = LANGS.find((item) => item.value === lang)!;
  return (
    <Dropdown
      menu={{
        selectedKeys: [lang],
        items: LANGS.map((item) => ({ key: item.value, label: item.label })),
        onClick: ({ key }) => setLang(key as typeof lang),
      }}
    >
      <Button type="text" icon={<GlobalOutlined />} data-testid="language-switch">
        {current.label}
      </Button>
    </Dropdown>
  );
}
