/**
 * What the sidebar views need from the application.
 */
import { TranslationBundle } from '@jupyterlab/translation';

import { JSONObject } from '../api';
import { MageModel } from '../model';

/** Services handed down to every view of the sidebar. */
export interface IViewContext {
  /** The sidebar model. */
  model: MageModel;
  /** Translations of the `jupyter_mage` domain. */
  trans: TranslationBundle;
  /** Open a file (root-relative path) in JupyterLab. */
  openPath: (path: string) => void;
  /**
   * Save a pipeline's global variables.
   *
   * @returns whether it worked (errors are already reported)
   */
  saveVariables: (
    pipelineUuid: string,
    variables: JSONObject
  ) => Promise<boolean>;
  /** Open the Pipelines workspace in the main area. */
  openWorkspace?: () => void;
}
