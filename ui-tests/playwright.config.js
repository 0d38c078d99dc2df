/**
 * Playwright configuration of the jupyter-mage UI tests.
 *
 * Three JupyterLab servers started for the tests, each on a free port: one at
 * the root URL, one under the base URL `/jm/`, one without the server extension.
 * A server the tests did not start (a `jupyter lab` left running on 8888) is
 * never used. The browser is Debian's Chromium (`apt-get install chromium`),
 * never a downloaded one.
 */
const { execFileSync } = require('child_process');
const base = require('@jupyterlab/galata/lib/playwright-config');

// Chosen once, in the process that loads this file first; the test workers it
// starts inherit the environment, so they all see the same ports.
if (!process.env.MAGE_UI_PORTS) {
  process.env.MAGE_UI_PORTS = execFileSync('python3', [
    '-c',
    [
      'import socket',
      'socks = [socket.socket() for _ in range(3)]',
      'for s in socks: s.bind(("127.0.0.1", 0))',
      'print(",".join(str(s.getsockname()[1]) for s in socks))'
    ].join('\n')
  ])
    .toString()
    .trim();
}
const [rootPort, basePort, plainPort] = process.env.MAGE_UI_PORTS.split(',');

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
      use: { baseURL: `http://localhost:${rootPort}` }
    },
    {
      name: 'base-url',
      testMatch: /base_url\.spec\.ts/,
      use: { baseURL: `http://localhost:${basePort}/jm` }
    },
    {
      name: 'no-server-extension',
      testMatch: /no_server_extension\.spec\.ts/,
      use: { baseURL: `http://localhost:${plainPort}` }
    }
  ],
  webServer: [
    {
      // Server logs go to files (printed by run-ci.sh when a test fails).
      command: `jupyter lab --config jupyter_server_test_config.py --port ${rootPort} > server-root-url.log 2>&1`,
      url: `http://localhost:${rootPort}/lab`,
      timeout: 120 * 1000,
      reuseExistingServer: false
    },
    {
      command: `jupyter lab --config jupyter_server_test_config.py --ServerApp.base_url=/jm/ --port ${basePort} > server-base-url.log 2>&1`,
      url: `http://localhost:${basePort}/jm/lab`,
      timeout: 120 * 1000,
      reuseExistingServer: false
    },
    {
      command: `MAGE_UI_TESTS_NO_SERVER_EXTENSION=1 jupyter lab --config jupyter_server_test_config.py --port ${plainPort} > server-no-server-extension.log 2>&1`,
      url: `http://localhost:${plainPort}/lab`,
      timeout: 120 * 1000,
      reuseExistingServer: false
    }
  ]
};
