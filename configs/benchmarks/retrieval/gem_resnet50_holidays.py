# Instance retrieval on INRIA Holidays with a frozen ResNet-50 and GeM pooling (Multigrain's
# embedding: mmpretrain's ResNet + GeneralizedMeanPooling, the target of
# converters/rules/zoo_multigrain.py). mmpretrain's ImageToImageRetriever ranks the whole database
# for each query by cosine similarity; HolidaysAveragePrecision reports mAP (primary) and
# Recall@1/5. Other depths: --cfg-options model.image_encoder.backbone.depth=18.
_base_ = ['./_base_/holidays.py', './_base_/schedule_frozen.py', './_base_/default_runtime.py']
data_preprocessor = dict(
    type='ClsDataPreprocessor',
    mean=[123.675, 116.28, 103.53],  # ImageNet statistics x 255; a checkpoint's own replace them
    std=[58.395, 57.12, 57.375],
    to_rgb=True)  # LoadImageFromFile reads BGR
model = dict(
    type='ImageToImageRetriever',
    data_preprocessor=data_preprocessor,
    # An ImageClassifier without a head: converted zoo checkpoints are whole ImageClassifier
    # state dicts (backbone.*, neck.*, head.*), so its backbone and neck take them as they are.
    image_encoder=dict(
        type='ImageClassifier',
        backbone=dict(
            type='ResNet',
            depth=50,
            num_stages=4,
            out_indices=(3, ),
            style='pytorch',  # stride on the 3x3 conv of Bottleneck, as torchvision and Multigrain
            init_cfg=dict(type='Pretrained', checkpoint=None)),  # --checkpoint fills it
        neck=dict(type='GeneralizedMeanPooling', p=3.0, eps=1e-6, clamp=True)),
    prototype={{_base_.database_dataloader}},  # the database, encoded before each validation
    similarity_fn='cosine_similarity',
    topk=-1)  # the metric needs every database score

backbone_name = 'resnet50-gem'  # the results' backbone column (the config builds no RingMoE)
protocol = 'frozen'  # the results' protocol column: off-the-shelf features, nothing trained
