/**
 * Playwright configuration of the jupyter-mage UI tests.
 *
 * Two JupyterLab servers: one at the root URL (port 8888) and one under the
 * base URL `/jm/` (port 8889). The browser is Debian's Chromium
 * (`apt-get install chromium`), never a downloaded one.
 */
const base = require('@jupyterlab/galata/lib/playwright-config');

const chromiumArgs = [
  // This machine has no network but localhost: keep Chromium from calling home.
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run'
];

module.exports = {
  ...base,
  reporter: [['list'], ['html', { open: 'never' }]],
  timeout: 90 * 1000,
  expect: { timeout: 20 * 1000 },
  retries: process.env.CI ? 1 : 0,
  workers: 1,
  use: {
    ...base.use,
    viewport: { width: 1280, height: 900 },
    video: 'off', // the default needs Playwright's own ffmpeg download
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: chromiumArgs
    }
  },
  projects: [
    {
      name: 'root-url',
      testIgnore: /(base_url|no_server_extension)\.spec\.ts/,
      use: { baseURL: 'http://localhost:8888' }
    },
    {
      name: 'base-url',
      testMatch: /base_url\.spec\.ts/,
      use: { baseURL: 'http://localhost:8889/jm' }
    },
    {
      name: 'no-server-extension',
      testMatch: /no_server_extension\.spec\.ts/,
      use: { baseURL: 'http://localhost:8890' }
    }
  ],
  webServer: [
    {
      // Server logs go to files (printed by run-ci.sh when a test fails).
      command:
        'jupyter lab --config jupyter_server_test_config.py > server-root-url.log 2>&1',
      url: 'http://localhost:8888/lab',
      timeout: 120 * 1000,
      reuseExistingServer: !process.env.CI
    },
    {
      command:
        'jupyter lab --config jupyter_server_test_config.py --ServerApp.base_url=/jm/ --port 8889 > server-base-url.log 2>&1',
      url: 'http://localhost:8889/jm/lab',
      timeout: 120 * 1000,
      reuseExistingServer: !process.env.CI
    },
    {
      command:
        'MAGE_UI_TESTS_NO_SERVER_EXTENSION=1 jupyter lab --config jupyter_server_test_config.py --port 8890 > server-no-server-extension.log 2>&1',
      url: 'http://localhost:8890/lab',
      timeout: 120 * 1000,
      reuseExistingServer: !process.env.CI
    }
  ]
};
