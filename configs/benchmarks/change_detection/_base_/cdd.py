# CDD (Lebedev et al. 2018, ChangeDetectionDataset/Real/subset): {train,val,test}/{A,B,OUT}/
# <name>.jpg, 256x256 RGB pairs with seasonal differences, change masks OUT as JPEG 0/255
# (BinarizeChangeMask thresholds the JPEG noise at 127). Read with mmseg's LEVIRCDDataset
# with JPEG suffixes; the pipelines are LEVIR-CD's (256 px crops are the whole image here).
_base_ = ['./levir_cd.py']
dataset_name = 'cdd'
data_root = 'data/cdd'
train_dataloader = dict(dataset=dict(
    data_root=data_root, img_suffix='.jpg', img_suffix2='.jpg', seg_map_suffix='.jpg',
    data_prefix=dict(img_path='train/A', img_path2='train/B', seg_map_path='train/OUT')))
val_dataloader = dict(dataset=dict(
    data_root=data_root, img_suffix='.jpg', img_suffix2='.jpg', seg_map_suffix='.jpg',
    data_prefix=dict(img_path='val/A', img_path2='val/B', seg_map_path='val/OUT')))
test_dataloader = dict(dataset=dict(
    data_root=data_root, img_suffix='.jpg', img_suffix2='.jpg', seg_map_suffix='.jpg',
    data_prefix=dict(img_path='test/A', img_path2='test/B', seg_map_path='test/OUT')))
