import sys
from os import path

current_dir = path.dirname(path.abspath(__file__))
while path.split(current_dir)[-1] != r'Heron':
    current_dir = path.dirname(current_dir)
sys.path.insert(0, path.dirname(current_dir))

import numpy as np
from heron_remote.heron.gui.visualisation_dpg import VisualisationDPG
from heron_remote.heron import general_utils as gu
from heron_remote.heron.communication.source_worker import SourceWorker
from heron_remote.heron.Operations.Sources.Test.Counter import counter_com

step: int
label: str
vis: VisualisationDPG


def initialise(worker_object: SourceWorker) -> bool:
    global step, label, vis

    try:
        parameters = worker_object.parameters
        visualisation_on = parameters[0]
        step = parameters[1]
        label = parameters[2]
    except Exception as e:
        print(e)
        return False

    vis = VisualisationDPG(_node_name=worker_object.node_name, _node_index=worker_object.node_index,
                           _visualisation_type='Value', _buffer=20)
    vis.visualisation_on = visualisation_on
    worker_object.savenodestate_create_parameters_df(visualisation_on=visualisation_on, step=step, label=label)
    return True


def work_function(worker_object: SourceWorker) -> None:
    global step, label, vis

    while not worker_object.initialised:
        gu.accurate_delay(10)

    count = 0
    while True:
        step = worker_object.parameters[1]
        vis.visualisation_on = worker_object.parameters[0]
        count += 1
        result = np.array([count, count * step, len(counter_com.ParameterNames)], dtype=np.int16)
        worker_object.send_data_to_com(result)
        vis.visualise(result)
        worker_object.savenodestate_update_substate_df(count=count, value=count * step)
        gu.accurate_delay(10)


def on_end_of_life() -> None:
    global vis
    try:
        vis.end_of_life()
    except Exception:
        pass


if __name__ == "__main__":
    worker_object = gu.start_the_source_worker_process(work_function=work_function,
                                                       end_of_life_function=on_end_of_life,
                                                       initialisation_function=initialise)
