/**
 * The extension's icons.
 */
import { LabIcon } from '@jupyterlab/ui-components';

import mageSvg from '../style/icons/mage.svg';
import blockSvg from '../style/icons/block.svg';

/** The icon of the Pipelines sidebar. */
export const mageIcon = new LabIcon({
  name: 'jupyter-mage:pipelines',
  svgstr: mageSvg
});

/** The icon of the block commands. */
export const blockIcon = new LabIcon({
  name: 'jupyter-mage:block',
  svgstr: blockSvg
});
