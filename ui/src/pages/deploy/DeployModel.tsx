// Deploy a model, or edit one: source, name, backend and version, parameters, environment, replicas and
// placement; the compatibility check runs as the form changes, before anything is created.

import { MinusCircleOutlined, PlusOutlined } from "@ant-design/icons";
import {
  Alert,
  App,
  AutoComplete,
  Button,
  Card,
  Col,
  Collapse,
  Form,
  Input,
  InputNumber,
  Radio,
  Row,
  Select,
  Space,
  Spin,
  Switch,
  Typography,
} from "antd";
import { useEffect, useMemo, useRef, useState } from "react";
import { useLocation, useNavigate, useParams } from "react-router";
import { describe, get, post, put } from "../../api/http";
import type { Evaluation, Model } from "../../api/types";
import { maybe, useT } from "../../i18n";
import type { CatalogChoice } from "../models/Catalog";
import { useLive } from "../../live/collection";
import { workers as liveWorkers } from "../../live/resources";
import { bytes } from "../../util/format";
import Compatibility from "./Compatibility";
import { COMMON_ENV, COMMON_FLAGS } from "./flags";
import { backendCatalog, serverSchema, SOURCE_FIELDS, SOURCE_LABELS, type BackendInfo, type ServerSchema } from "./sources";

interface Pair {
  key?: string;
  value?: string;
}

interface FormValues {
  name: string;
  description?: string;
  source: string;
  backend: string;
  backend_version?: string;
  backend_parameters?: string[];
  env?: { name?: string; value?: string }[];
  replicas: number;
  placement_strategy: string;
  worker_selector?: Pair[];
  gpu_ids?: string[];
  cpu_offloading: boolean;
  distributed_inference_across_workers: boolean;
  restart_on_error: boolean;
  [sourceField: string]: unknown;
}

const DEFAULTS: Partial<FormValues> = {
  source: "local_path",
  backend: "llama-box",
  backend_parameters: [],
  env: [],
  replicas: 1,
  placement_strategy: "spread",
  worker_selector: [],
  gpu_ids: [],
  cpu_offloading: true,
  distributed_inference_across_workers: true,
  restart_on_error: true,
};

/** The API's model fields from the form's values. */
function toBody(values: FormValues): Record<string, unknown> {
  const body: Record<string, unknown> = {
    name: values.name?.trim(),
    description: values.description ?? "",
    source: values.source,
    backend: values.backend,
    backend_version: values.backend_version?.trim() || null,
    backend_parameters: (values.backend_parameters ?? []).map((p) => (p ?? "").trim()).filter(Boolean),
    env: Object.fromEntries((values.env ?? []).filter((e) => e?.name?.trim()).map((e) => [e.name!.trim(), e.value ?? ""])),
    replicas: values.replicas,
    placement_strategy: values.placement_strategy,
    worker_selector: Object.fromEntries((values.worker_selector ?? []).filter((p) => p?.key?.trim()).map((p) => [p.key!.trim(), p.value ?? ""])),
    gpu_selector: values.gpu_ids?.length ? { gpu_ids: values.gpu_ids } : null,
    cpu_offloading: values.cpu_offloading,
    distributed_inference_across_workers: values.distributed_inference_across_workers,
    restart_on_error: values.restart_on_error,
  };
  for (const field of SOURCE_FIELDS[values.source] ?? []) {
    const value = values[field.name];
    if (typeof value === "string" && value.trim()) body[field.name] = value.trim();
  }
  return body;
}

function fromModel(model: Model): FormValues {
  const values: FormValues = {
    ...(DEFAULTS as FormValues),
    name: model.name,
    description: model.description,
    source: model.source,
    backend: model.backend,
    backend_version: model.backend_version ?? undefined,
    backend_parameters: model.backend_parameters,
    env: Object.entries(model.env ?? {}).map(([name, value]) => ({ name, value })),
    replicas: model.replicas,
    placement_strategy: model.placement_strategy,
    worker_selector: Object.entries(model.worker_selector ?? {}).map(([key, value]) => ({ key, value })),
    gpu_ids: model.gpu_selector?.gpu_ids ?? [],
    cpu_offloading: model.cpu_offloading,
    distributed_inference_across_workers: model.distributed_inference_across_workers,
    restart_on_error: model.restart_on_error,
  };
  for (const field of SOURCE_FIELDS[model.source] ?? []) values[field.name] = model[field.name] ?? undefined;
  return values;
}

/** The form's values for a catalog variant: its source and source fields, backend and parameters. */
function fromCatalog(choice: CatalogChoice): FormValues {
  const { variant } = choice;
  const values: FormValues = {
    ...(DEFAULTS as FormValues),
    name: choice.name,
    source: variant.source,
    backend: variant.backend,
    backend_parameters: [...(variant.backend_parameters ?? [])],
  };
  for (const field of SOURCE_FIELDS[variant.source] ?? []) {
    const value = variant[field.name];
    if (typeof value === "string") values[field.name] = value;
  }
  return values;
}

function suggestedName(path: string): string {
  const base = path.split(/[\\/]/).filter(Boolean).pop() ?? "";
  return base
    .replace(/\.gguf$/i, "")
    .replace(/-0*1-of-\d+$/i, "")
    .replace(/[^A-Za-z0-9._:@+-]/g, "-")
    .toLowerCase()
    .slice(0, 100);
}

export default function DeployModel() {
  const t = useT();
  const navigate = useNavigate();
  const { message } = App.useApp();
  const { id } = useParams();
  const location = useLocation();
  const fromCatalogChoice = (location.state as { catalog?: CatalogChoice } | null)?.catalog ?? null;
  const editing = id !== undefined;
  const [form] = Form.useForm<FormValues>();
  const [schema, setSchema] = useState<ServerSchema | null>(null);
  const [backends, setBackends] = useState<BackendInfo[] | null>(null);
  const [loaded, setLoaded] = useState<Model | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [submitError, setSubmitError] = useState<string | null>(null);
  const [submitting, setSubmitting] = useState(false);
  const [evaluation, setEvaluation] = useState<Evaluation | null>(null);
  const [evaluating, setEvaluating] = useState(false);
  const [evaluationError, setEvaluationError] = useState<string | null>(null);
  const sequence = useRef(0);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const workers = useLive(liveWorkers);
  const source = Form.useWatch("source", form) ?? "local_path";
  const backend = Form.useWatch("backend", form) ?? "llama-box";

  useEffect(() => {
    void serverSchema().then(setSchema);
    void backendCatalog().then(setBackends);
  }, []);

  useEffect(() => {
    if (!editing) return;
    get<Model>(`/v2/models/${id}`)
      .then((model) => {
        setLoaded(model);
        form.setFieldsValue(fromModel(model));
        schedule();
      })
      .catch((error) => setLoadError(describe(error)));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [id]);

  useEffect(() => {
    if (editing || !fromCatalogChoice) return;
    form.resetFields();
    form.setFieldsValue(fromCatalog(fromCatalogChoice));
    schedule();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [location.key]);

  useEffect(() => () => {
    if (timer.current) clearTimeout(timer.current);
  }, []);

  const evaluate = async () => {
    const values = form.getFieldsValue(true) as FormValues;
    const body = toBody(values);
    const required = (SOURCE_FIELDS[values.source] ?? []).filter((f) => f.required);
    if (!body.name || required.some((f) => !body[f.name])) {
      setEvaluation(null);
      return;
    }
    const mine = ++sequence.current;
    setEvaluating(true);
    setEvaluationError(null);
    try {
      const answer = await post<{ results: Evaluation[] }>("/v2/model-evaluations", { models: [body] });
      if (mine === sequence.current) setEvaluation(answer.results[0] ?? null);
    } catch (error) {
      if (mine === sequence.current) {
        setEvaluation(null);
        setEvaluationError(describe(error));
      }
    } finally {
      if (mine === sequence.current) setEvaluating(false);
    }
  };

  const schedule = () => {
    if (timer.current) clearTimeout(timer.current);
    timer.current = setTimeout(() => void evaluate(), 700);
  };

  const submit = async (values: FormValues) => {
    setSubmitting(true);
    setSubmitError(null);
    const body = toBody({ ...(form.getFieldsValue(true) as FormValues), ...values });
    try {
      if (editing) {
        const allowed = schema?.updatable ?? [
          "description", "local_path", "backend_version", "backend_parameters", "env", "replicas", "placement_strategy",
          "worker_selector", "gpu_selector", "cpu_offloading", "distributed_inference_across_workers", "restart_on_error",
        ];
        await put(`/v2/models/${id}`, Object.fromEntries(Object.entries(body).filter(([key]) => allowed.includes(key))));
        message.success(t("deploy.saved", { name: body.name as string }));
      } else {
        await post("/v2/models", body);
        message.success(t("deploy.created", { name: body.name as string }));
      }
      navigate("/models");
    } catch (error) {
      setSubmitError(describe(error));
    } finally {
      setSubmitting(false);
    }
  };

  const gpuOptions = useMemo(
    () =>
      workers.items.map((worker) => ({
        label: worker.name,
        options: (worker.status?.gpu_devices ?? []).map((gpu) => ({
          value: gpu.id || `${worker.name}:${gpu.type}:${gpu.index}`,
          label: `${gpu.id || `${worker.name}:${gpu.type}:${gpu.index}`} · ${gpu.name} · ${bytes(gpu.memory.total)}`,
        })),
      })).filter((group) => group.options.length),
    [workers],
  );
  const labelKeys = useMemo(() => [...new Set(workers.items.flatMap((w) => Object.keys(w.labels ?? {})))], [workers]);
  const catalog = backends?.find((b) => b.name === backend);
  const flags = [...(COMMON_FLAGS[backend] ?? []), ...(catalog?.parameters ?? [])];
  const sources = schema?.sources ?? ["local_path"];
  const backendChoices = schema?.backends ?? ["llama-box", "vllm", "vox-box", "ascend-mindie"];

  if (loadError) return <Alert type="error" showIcon message={loadError} />;
  if (editing && !loaded) return <Spin style={{ display: "block", margin: 80 }} />;

  return (
    <Row gutter={16}>
      <Col xs={24} xl={14}>
        <Card title={editing ? t("deploy.editTitle", { name: loaded?.name ?? "" }) : t("deploy.title")}>
          {!editing && fromCatalogChoice && (
            <Alert
              type="info"
              showIcon
              data-testid="from-catalog"
              message={t("catalog.prefilled", { name: fromCatalogChoice.entry })}
              style={{ marginBottom: 16 }}
            />
          )}
          <Form<FormValues>
            form={form}
            layout="vertical"
            initialValues={DEFAULTS}
            onFinish={submit}
            onValuesChange={(changed) => {
              if (!editing && typeof changed.local_path === "string" && !form.getFieldValue("name")) {
                form.setFieldValue("name", suggestedName(changed.local_path));
              }
              schedule();
            }}
          >
            <Form.Item name="source" label={t("deploy.sourceLabel")} rules={[{ required: true }]}>
              <Radio.Group disabled={editing} optionType="button" data-testid="source">
                {sources.map((value) => (
                  <Radio.Button key={value} value={value}>
                    {SOURCE_LABELS[value] ? t(SOURCE_LABELS[value]) : value}
                  </Radio.Button>
                ))}
              </Radio.Group>
            </Form.Item>
            {!SOURCE_FIELDS[source] && <Alert type="warning" showIcon message={t("deploy.unknownSource", { source })} style={{ marginBottom: 16 }} />}
            {(SOURCE_FIELDS[source] ?? []).map((field) => (
              <Form.Item
                key={field.name}
                name={field.name}
                label={t(field.label)}
                rules={[{ required: field.required, whitespace: true }]}
                extra={field.name === "local_path" ? t("deploy.localPathHelp") : undefined}
              >
                <Input placeholder={field.placeholder} data-testid={`field-${field.name}`} disabled={editing && field.name !== "local_path"} />
              </Form.Item>
            ))}
            <Form.Item name="name" label={t("models.name")} rules={[{ required: true, whitespace: true }]}>
              <Input disabled={editing} data-testid="field-name" />
            </Form.Item>
            <Form.Item name="description" label={t("deploy.description")}>
              <Input.TextArea autoSize={{ minRows: 1, maxRows: 4 }} />
            </Form.Item>
            <Row gutter={12}>
              <Col span={12}>
                <Form.Item name="backend" label={t("models.backend")} rules={[{ required: true }]}>
                  <Select disabled={editing} data-testid="field-backend" options={backendChoices.map((value) => ({ value, label: value }))} />
                </Form.Item>
              </Col>
              <Col span={12}>
                <Form.Item name="replicas" label={t("models.replicas")} rules={[{ required: true }]}>
                  <InputNumber min={0} max={64} style={{ width: "100%" }} data-testid="field-replicas" />
                </Form.Item>
              </Col>
            </Row>
            <Collapse
              data-testid="advanced"
              items={[
                {
                  key: "advanced",
                  label: t("deploy.advanced"),
                  forceRender: true,
                  children: (
                    <>
                      <Form.Item
                        name="backend_version"
                        label={t("deploy.backendVersion")}
                        extra={catalog?.defaultVersion ? t("deploy.defaultVersion", { v: catalog.defaultVersion }) : t("deploy.backendVersionHelp")}
                      >
                        <AutoComplete
                          allowClear
                          data-testid="field-backend-version"
                          options={(catalog?.versions ?? []).map((value) => ({ value }))}
                          placeholder={catalog?.defaultVersion ?? ""}
                        />
                      </Form.Item>
                      <Form.Item label={t("deploy.backendParameters")} extra={t("deploy.backendParametersHelp")}>
                        <Form.List name="backend_parameters">
                          {(fields, { add, remove }) => (
                            <>
                              {fields.map((field) => (
                                <Space key={field.key} style={{ display: "flex", marginBottom: 8 }} align="baseline">
                                  <Form.Item {...field} noStyle>
                                    <AutoComplete
                                      style={{ width: 380 }}
                                      data-testid={`param-${field.name}`}
                                      placeholder="--ctx-size=4096"
                                      options={flags.map((f) => ({
                                        value: f.flag,
                                        label: (
                                          <span>
                                            <code>{f.flag}</code> <Typography.Text type="secondary">{f.help}</Typography.Text>
                                          </span>
                                        ),
                                      }))}
                                      filterOption={(input, option) => String(option?.value ?? "").includes(input.split(/[=\s]/)[0])}
                                    />
                                  </Form.Item>
                                  <MinusCircleOutlined onClick={() => remove(field.name)} />
                                </Space>
                              ))}
                              <Button type="dashed" icon={<PlusOutlined />} onClick={() => add("")} data-testid="add-parameter">
                                {t("deploy.addParameter")}
                              </Button>
                            </>
                          )}
                        </Form.List>
                      </Form.Item>
                      <Form.Item label={t("deploy.env")} extra={t("deploy.envHelp")}>
                        <Form.List name="env">
                          {(fields, { add, remove }) => (
                            <>
                              {fields.map((field) => (
                                <Space key={field.key} style={{ display: "flex", marginBottom: 8 }} align="baseline">
                                  <Form.Item name={[field.name, "name"]} noStyle rules={[{ pattern: /^[A-Za-z_][A-Za-z0-9_]*$/, message: t("deploy.envName") }]}>
                                    <AutoComplete
                                      style={{ width: 220 }}
                                      placeholder="NAME"
                                      data-testid={`env-name-${field.name}`}
                                      options={(COMMON_ENV[backend] ?? []).map((value) => ({ value }))}
                                    />
                                  </Form.Item>
                                  <Form.Item name={[field.name, "value"]} noStyle>
                                    <Input style={{ width: 220 }} placeholder="value" data-testid={`env-value-${field.name}`} />
                                  </Form.Item>
                                  <MinusCircleOutlined onClick={() => remove(field.name)} />
                                </Space>
                              ))}
                              <Button type="dashed" icon={<PlusOutlined />} onClick={() => add({ name: "", value: "" })} data-testid="add-env">
                                {t("deploy.addEnv")}
                              </Button>
                            </>
                          )}
                        </Form.List>
                      </Form.Item>
                      <Form.Item name="placement_strategy" label={t("deploy.placement")} extra={t("deploy.placementHelp")}>
                        <Radio.Group
                          options={(schema?.placementStrategies ?? ["spread", "binpack"]).map((value) => ({
                            value,
                            label: maybe(t, `deploy.strategy.${value}`, value),
                          }))}
                        />
                      </Form.Item>
                      <Form.Item label={t("deploy.workerSelector")} extra={t("deploy.workerSelectorHelp")}>
                        <Form.List name="worker_selector">
                          {(fields, { add, remove }) => (
                            <>
                              {fields.map((field) => (
                                <Space key={field.key} style={{ display: "flex", marginBottom: 8 }} align="baseline">
                                  <Form.Item name={[field.name, "key"]} noStyle>
                                    <AutoComplete style={{ width: 200 }} placeholder="label" options={labelKeys.map((value) => ({ value }))} />
                                  </Form.Item>
                                  <Form.Item name={[field.name, "value"]} noStyle>
                                    <Input style={{ width: 200 }} placeholder="value" />
                                  </Form.Item>
                                  <MinusCircleOutlined onClick={() => remove(field.name)} />
                                </Space>
                              ))}
                              <Button type="dashed" icon={<PlusOutlined />} onClick={() => add({ key: "", value: "" })}>
                                {t("deploy.addLabel")}
                              </Button>
                            </>
                          )}
                        </Form.List>
                      </Form.Item>
                      <Form.Item name="gpu_ids" label={t("deploy.gpuSelector")} extra={t("deploy.gpuSelectorHelp")}>
                        <Select mode="multiple" allowClear options={gpuOptions} placeholder={t("deploy.gpuAuto")} notFoundContent={t("dashboard.noGpus")} />
                      </Form.Item>
                      <Space size="large" wrap>
                        <Form.Item name="cpu_offloading" label={t("deploy.cpuOffloading")} valuePropName="checked" tooltip={t("deploy.cpuOffloadingHelp")}>
                          <Switch />
                        </Form.Item>
                        <Form.Item
                          name="distributed_inference_across_workers"
                          label={t("deploy.distributed")}
                          valuePropName="checked"
                          tooltip={t("deploy.distributedHelp")}
                        >
                          <Switch />
                        </Form.Item>
                        <Form.Item name="restart_on_error" label={t("deploy.restartOnError")} valuePropName="checked">
                          <Switch />
                        </Form.Item>
                      </Space>
                    </>
                  ),
                },
              ]}
            />
            {submitError && <Alert type="error" showIcon message={submitError} style={{ marginTop: 16 }} data-testid="submit-error" />}
            <Space style={{ marginTop: 16 }}>
              <Button type="primary" htmlType="submit" loading={submitting} data-testid="submit-model">
                {editing ? t("common.save") : t("deploy.submit")}
              </Button>
              <Button onClick={() => navigate("/models")}>{t("common.cancel")}</Button>
            </Space>
          </Form>
        </Card>
      </Col>
      <Col xs={24} xl={10}>
        <Card
          title={t("deploy.compatibility")}
          extra={
            <Button size="small" loading={evaluating} onClick={() => void evaluate()} data-testid="check-compatibility">
              {t("deploy.check")}
            </Button>
          }
          style={{ position: "sticky", top: 16 }}
        >
          {evaluationError && <Alert type="error" showIcon message={evaluationError} style={{ marginBottom: 12 }} />}
          <Compatibility result={evaluation} busy={evaluating} />
        </Card>
      </Col>
    </Row>
  );
}
