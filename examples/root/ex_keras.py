"""The example of ``my_model.py`` as a Keras 3 model (MLaaS4HEP's ``ex_keras.py``).

root-train runs Keras on its torch backend (``KERAS_BACKEND=torch``), where a Keras model is a
torch module: it trains, exports to TorchScript and serves like a torch model, with no
TensorFlow.  ``pip install 'tpcflow[keras]'``.
"""

import keras

NUM_CLASSES = 5


def model(idim):
    m = keras.Sequential([
        keras.layers.Input((idim,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(NUM_CLASSES),  # logits: root-train applies the cross-entropy
    ])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")  # as in ex_keras.py; root-train trains it
    return m
