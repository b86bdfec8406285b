// Vite build of the web client. Output goes to web/dist, which the gateway serves (src/http/web-client.ts):
// hashed files under /assets are cached forever, index.html is revalidated.
import { defineConfig } from 'vitest/config';

// `npm run dev` proxies the API and the viewer socket to a gateway (default http://127.0.0.1:3000).
// The Host header is kept (changeOrigin: false) so the gateway's Origin check sees the dev origin
// as its own.
const gateway = process.env.CLOUDDESK_GATEWAY ?? 'http://127.0.0.1:3000';

export default defineConfig({
  build: {
    // noVNC 1.7 uses top-level await (a WebCodecs probe at import time): ES2022 is the floor.
    target: 'es2022',
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    sourcemap: true,
    modulePreload: { polyfill: false },
  },
  optimizeDeps: {
    // Already ESM; pre-bundling it with a lower target would choke on its top-level await.
    exclude: ['@novnc/novnc'],
  },
  server: {
    proxy: {
      '/api': { target: gateway, changeOrigin: false },
      '/vnc': { target: gateway, changeOrigin: false, ws: true },
    },
  },
  test: {
    environment: 'node',
    include: ['test/**/*.test.ts'],
  },
});
