// What a page shows when the server it talks to has no such API yet (the route answers 404).

import { Result } from "antd";
import { useT } from "../i18n";

export default function Unavailable({ what }: { what: string }) {
  const t = useT();
  return (
    <Result
      status="info"
      title={t("common.unavailable")}
      subTitle={t("common.unavailableDetail", { what })}
      data-testid="unavailable"
    />
  );
}
