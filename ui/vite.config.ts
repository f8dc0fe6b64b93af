// Vite builds the UI into the Python package, which the server serves at / (gpustack/server/ui.py).
// `npm run dev` serves it with hot reload and sends API calls to a running server (GPUSTACK_URL).
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const server = process.env.GPUSTACK_URL ?? "http://127.0.0.1:80";

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "../gpustack/server/static",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 1500,
  },
  server: {
    proxy: Object.fromEntries(
      ["/v1", "/v1-openai", "/v2", "/auth", "/openapi.json", "/version"].map((p) => [p, server]),
    ),
  },
});
