"""Video datasets (Jester, UCF-101, Kinetics, labelled folders) to sharded TFRecords.

    python -m tfrecords_tools.convert --format folders --input DIR --output DIR
    python -m tfrecords_tools.synthetic --output DIR
    python -m tfrecords_tools.inspect 'DIR/train-*.tfrecord'

The record layout lives in `tfrecords_tools.schema`; `keras_r3d.data` reads it.
"""
