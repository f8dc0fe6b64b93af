// A block of code or a secret with a copy button (copying works on http:// too, where the clipboard API
// is not offered).

import { CheckOutlined, CopyOutlined } from "@ant-design/icons";
import { Button, Tooltip } from "antd";
import { useState } from "react";
import { useT } from "../i18n";

export async function copyText(text: string): Promise<void> {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

export function CopyButton({ text, testId }: { text: string; testId?: string }) {
  const t = useT();
  const [copied, setCopied] = useState(false);
  return (
    <Tooltip title={copied ? t("common.copied") : t("common.copy")}>
      <Button
        size="small"
        data-testid={testId}
        icon={copied ? <CheckOutlined /> : <CopyOutlined />}
        onClick={async () => {
          await copyText(text);
          setCopied(true);
          setTimeout(() => setCopied(false), 1500);
        }}
      />
    </Tooltip>
  );
}

export default function CodeBlock({ code, testId }: { code: string; testId?: string }) {
  return (
    <div style={{ position: "relative" }}>
      <pre
        data-testid={testId}
        style={{
          background: "#f6f8fa",
          border: "1px solid #eaecef",
          borderRadius: 6,
          padding: "10px 44px 10px 12px",
          margin: 0,
          overflow: "auto",
          fontSize: 12,
          whiteSpace: "pre",
        }}
      >
        {code}
      </pre>
      <div style={{ position: "absolute", top: 6, right: 6 }}>
        <CopyButton text={code} />
      </div>
    </div>
  );
}
