// "View code": the request the playground sends, as curl and as Python with the openai client.

import { Modal, Tabs, Typography } from "antd";
import CodeBlock from "../../components/CodeBlock";
import { useT } from "../../i18n";

export default function CodeModal({ open, onClose, curl, python }: { open: boolean; onClose: () => void; curl: string; python: string }) {
  const t = useT();
  return (
    <Modal open={open} onCancel={onClose} footer={null} width={760} title={t("playground.code")}>
      <Typography.Paragraph type="secondary">{t("playground.codeHelp")}</Typography.Paragraph>
      <Tabs
        items={[
          { key: "curl", label: "curl", children: <CodeBlock code={curl} testId="code-curl" /> },
          { key: "python", label: "Python (openai)", children: <CodeBlock code={python} testId="code-python" /> },
        ]}
      />
    </Modal>
  );
}
